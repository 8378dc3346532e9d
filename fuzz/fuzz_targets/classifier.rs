//! The whole classifier on arbitrary messages: it returns a classification or an error
//! (which markgate turns into a quarantine), never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let classifier = markgate::marking::classify::Classifier::new(&Default::default());
    let _ = classifier.classify(data);
});
