#![no_main]
//! The Redis reply parser (the cluster's control thread reads replies from the
//! network): any input is a reply, "incomplete", or a typed error; never a
//! panic, never more consumed than given, and a parsed prefix re-parses the same.
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::resp::parse_reply;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match parse_reply(&data[at..]) {
            Ok(Some((reply, n))) => {
                assert!(n > 0 && at + n <= data.len());
                assert_eq!(parse_reply(&data[at..at + n]), Ok(Some((reply, n))));
                at += n;
            }
            Ok(None) | Err(_) => return,
        }
    }
});
