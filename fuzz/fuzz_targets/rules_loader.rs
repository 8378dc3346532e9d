//! The rule, directory and config loaders: any text loads or gives a located error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(err) = markgate::policy::Policy::from_str(text, "fuzz.yaml") {
        assert!(err.to_string().starts_with("fuzz.yaml"), "{err}");
    }
    let _ = markgate::yaml::from_str::<markgate::config::Config>(text, "fuzz.yaml");
    let _ = markgate::yaml::from_str::<markgate::directory::DirectoryFile>(text, "fuzz.yaml");
});
