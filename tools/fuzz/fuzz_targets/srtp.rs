#![no_main]
//! SRTP and SRTCP under a key taken from the input. Arbitrary bytes into
//! `unprotect_rtp` / `unprotect_rtcp` never panic and never report a length
//! beyond the packet; the same bytes (made RTP/RTCP version 2, with one of 16
//! SSRCs so the SSRC table never evicts) protected by one context unprotect in
//! a twin context to exactly the original, or are refused as an RTP replay.
//!
//! Input: profile byte | master key | master salt | { flags | len | len bytes }*
//! The profile byte modulo 3 picks AES_CM_128_HMAC_SHA1_80, AEAD_AES_128_GCM or
//! AEAD_AES_256_GCM; the key and salt lengths follow the profile (16/14, 16/12, 32/12).
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::srtp::{SrtpContext, SrtpError, SrtpProfile};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let profile = match selector % 3 {
        0 => SrtpProfile::Aes128CmSha1_80,
        1 => SrtpProfile::AeadAes128Gcm,
        _ => SrtpProfile::AeadAes256Gcm,
    };
    let master_len = profile.key_len() + profile.salt_len();
    if rest.len() < master_len {
        return;
    }
    let (master, mut input) = rest.split_at(master_len);
    let (key, salt) = master.split_at(profile.key_len());
    let new = || SrtpContext::new(profile, key, salt).expect("lengths fit the profile");
    let (mut rx, mut tx, mut peer) = (new(), new(), new());

    while let [flags, len, tail @ ..] = input {
        let (pkt, next) = tail.split_at(usize::from(*len).min(tail.len()));
        input = next;
        let rtcp = flags & 1 != 0;

        let mut buf = pkt.to_vec();
        let got = if rtcp {
            rx.unprotect_rtcp(&mut buf)
        } else {
            rx.unprotect_rtp(&mut buf)
        };
        if let Ok(n) = got {
            assert!(n <= pkt.len());
        }

        let mut plain = pkt.to_vec();
        if flags & 2 != 0 {
            if let Some(b) = plain.first_mut() {
                *b = 0x80 | (*b & 0x3f);
            }
        }
        let ssrc_at = if rtcp { 4 } else { 8 };
        if let Some(ssrc) = plain.get_mut(ssrc_at..ssrc_at + 4) {
            ssrc.copy_from_slice(&[0, 0, 0, flags >> 4]);
        }
        let mut wire = plain.clone();
        let protected = if rtcp {
            tx.protect_rtcp(&mut wire)
        } else {
            tx.protect_rtp(&mut wire)
        };
        if protected.is_err() {
            assert_eq!(wire, plain, "a failed protect leaves the packet alone");
            continue;
        }
        let overhead = if rtcp {
            profile.rtcp_overhead()
        } else {
            profile.rtp_overhead()
        };
        assert_eq!(wire.len(), plain.len() + overhead);
        let back = if rtcp {
            peer.unprotect_rtcp(&mut wire)
        } else {
            peer.unprotect_rtp(&mut wire)
        };
        match back {
            Ok(n) => assert_eq!(&wire[..n], &plain[..]),
            Err(SrtpError::Replay) if !rtcp => {}
            Err(e) => panic!("round trip failed: {e}"),
        }
    }
});
