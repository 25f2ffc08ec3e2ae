//! Fuzz the Opus depacketizer: records `flags u8 | len u8 | payload[len]`
//! (flag 0x01 after_loss, 0x02 skip a sequence number, 0x04 `reset()`).
//! Every non-empty payload comes back unchanged with its timestamp.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::depack::opus::OpusDepacketizer;
use rtcbridge::proto::depack::{DropReason, Pushed, RtpView};

fuzz_target!(|data: &[u8]| {
    let mut d = OpusDepacketizer::new();
    let mut seq = 0u64;
    let mut rest = data;
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        if flags & 0x04 != 0 {
            d.reset();
        }
        seq += if flags & 0x02 != 0 { 2 } else { 1 };
        let ts = seq * 960;
        let r = d.push(RtpView {
            seq,
            ts,
            marker: false,
            payload,
            after_loss: flags & 0x01 != 0,
        });
        match r {
            Pushed::Complete => {
                let u = d.take_unit().expect("unit after Complete");
                assert_eq!((u.ts, &u.data[..]), (ts, payload));
            }
            Pushed::Dropped(DropReason::Malformed) => assert!(payload.is_empty()),
            other => panic!("unexpected {other:?}"),
        }
        assert!(d.take_unit().is_none());
    }
    assert_eq!(d.stats().units + d.stats().dropped(), d.stats().packets);
});
