//! The marking grammar and the title and banner extractors: no panic on any text, and a
//! level is only ever one of the canonical ones.
#![no_main]
use libfuzzer_sys::fuzz_target;
use markgate::marking::{epms, grammar, places, Level};

fuzz_target!(|text: &str| {
    let check = |p: Option<markgate::marking::level::Parsed>| {
        if let Some(level) = p.and_then(|p| p.level) {
            assert!(Level::ALL.contains(&level));
        }
    };
    check(grammar::parse(text));
    check(epms::parse(text));
    for (p, _) in places::subject(text).into_iter().chain(places::file_name(text)) {
        check(Some(p));
    }
    for (p, _, _) in places::banners(text).into_iter().chain(places::history_subjects(text)) {
        check(Some(p));
    }
});
