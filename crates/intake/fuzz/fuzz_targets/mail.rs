//! Any bytes as an e-mail, then its rate files and their rows: never a panic.
#![no_main]

use std::sync::Once;

use billhook_intake::{parse_message, rate_files, rates};
use libfuzzer_sys::fuzz_target;

/// libFuzzer's panic hook aborts on every panic, even one that is caught.
/// `parse_message` deliberately catches the one `debug_assert!` of mail-parser
/// 0.11.9 that damaged nested messages trigger (compiled out in release builds),
/// so that one alone is let through to be caught; any other panic still aborts.
fn tolerate_known_debug_assert() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let known = info
                .location()
                .is_some_and(|l| l.file().contains("mail-parser-0.11."))
                && info
                    .to_string()
                    .contains("Invalid part ID, could not find multipart.");
            if !known {
                fuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    tolerate_known_debug_assert();
    let Ok(message) = parse_message(data) else {
        return;
    };
    if let Ok(files) = rate_files(&message) {
        for file in files {
            if let Ok(deck) = rates(&file.data[..]) {
                deck.for_each(drop);
            }
        }
    }
});
