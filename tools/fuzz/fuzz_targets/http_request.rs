#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(req)) = rtcbridge::proto::http::parse_request(data) {
        assert!(req.head_len <= data.len());
        let _ = req.header("content-length");
    }
});
