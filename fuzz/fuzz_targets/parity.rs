//! One view whatever the size: a message classified from memory, from a spool with a tiny
//! threshold, and (where the walk accepts it) by the bare parser must agree.
#![no_main]
use libfuzzer_sys::fuzz_target;
use markgate::message::Spool;

fuzz_target!(|data: &[u8]| {
    let classifier = markgate::marking::classify::Classifier::new(&Default::default());
    let show = |r: Result<markgate::marking::classify::Classification, _>| match r {
        Ok(c) => format!(
            "{} {:?} {} {}",
            c.marking.level_name(),
            c.marking.evidence.iter().map(|e| (&e.source, &e.text)).collect::<Vec<_>>(),
            c.signature,
            c.attachments.len()
        ),
        Err(e) => format!("error {e}"),
    };
    let memory = show(classifier.classify_spool(&Spool::from_bytes(data.to_vec()), None));
    let dir = std::env::temp_dir().join("markgate-fuzz-parity");
    let _ = std::fs::create_dir_all(&dir);
    let mut disk = Spool::new(16, &dir);
    if disk.write(data).is_err() {
        return;
    }
    let spooled = show(classifier.classify_spool(&disk, None));
    assert_eq!(memory, spooled);
    if !memory.starts_with("error") {
        let bare = show(classifier.classify_unwalked(data));
        assert_eq!(memory, bare);
    }
});
