//! The rules parser must never panic, whatever bytes it is given, and every
//! error it reports must point inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = meridian_rules::Rules::parse("fuzz.toml", text) {
        let lines = text.split('\n').count();
        for e in errors.iter() {
            assert!(e.line >= 1 && e.line <= lines && e.column >= 1, "{e}");
        }
    }
});
