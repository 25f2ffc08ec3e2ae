//! SRTP and SRTCP packet protection (RFC 3711, RFC 7714), sans-IO.
//!
//! Implemented:
//! - Profiles `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711 §4.1.1 AES counter mode, §4.2.1
//!   HMAC-SHA1 truncated to 80 bits), `SRTP_AEAD_AES_128_GCM` and `SRTP_AEAD_AES_256_GCM`
//!   (RFC 7714, 16-octet tag), identified by their DTLS-SRTP ids (RFC 5764 §4.1.2, RFC 7714
//!   §14.2).
//! - Session key derivation with the AES-CM PRF and key derivation rate 0 (RFC 3711 §4.3):
//!   all session keys are derived once, in [`SrtpContext::new`]. The PRF is AES-128 keyed by
//!   a 16-octet master key, or AES-256 keyed by the 32-octet master key of
//!   `SRTP_AEAD_AES_256_GCM` (RFC 3711 §4.3.3, RFC 6188's AES_256_CM_PRF, RFC 7714 §11),
//!   with the same IV and labels; GCM session keys are as long as the master key. The
//!   96-bit GCM master salt is multiplied by 2^16 into the PRF's 112 bits (RFC 7714 §11,
//!   erratum 4938), as libsrtp does.
//! - RTP: per-SSRC roll-over counter and index estimation (RFC 3711 §3.3.1, Appendix A) and
//!   a 128-packet replay window (§3.3.2). State moves only after a packet authenticated.
//! - SRTCP: the E flag and 31-bit SRTCP index trailer (§3.4), a 128-packet replay window and
//!   a send counter per SSRC. Unencrypted SRTCP (E = 0) is accepted on receive.
//! - At most [`MAX_SSRCS`] SSRCs per context; a new SSRC evicts the least recently used one.
//!   Only authenticated packets create receive state, so a forger cannot evict anything.
//!
//! Deliberately not implemented: MKI (WebRTC never negotiates it), key derivation rate > 0
//! (re-keying is a new DTLS handshake), the 32-bit tag profiles, the AES-192/256 counter
//! mode profiles of RFC 6188 and the double-encryption profiles of RFC 8723, the NULL
//! cipher, header extension encryption (RFC 6904, RFC 9335), sending unencrypted SRTCP, and
//! zeroizing key material on drop.
//!
//! Errors: every error of `unprotect_*` means "drop this packet and count it"; the context
//! stays usable. `protect_*` fails on malformed input or, after 2^48 RTP or 2^31 SRTCP
//! packets under one key, with [`SrtpError::KeyLimit`]: the session needs new keys (§9.2).
//!
//! Cost: `unprotect_*` allocates nothing; the AES key schedules, the GCM hash key and the
//! pre-keyed HMAC live in the context. `protect_*` only grows the caller's `Vec` by the
//! profile's overhead (reserve [`SrtpProfile::rtp_overhead`] to avoid reallocating).

use aes::cipher::consts::U16;
use aes::cipher::{BlockCipher, BlockEncrypt, InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes128Enc, Aes256Enc};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Most SSRCs one context tracks; the least recently used is forgotten beyond it.
/// A browser sends about six (audio, video, RTX, simulcast layers).
pub const MAX_SSRCS: usize = 32;
/// Replay window in packets (RFC 3711 §3.3.2 asks for at least 64).
pub const REPLAY_WINDOW: u64 = 128;
/// Largest packet accepted by `protect_*` and `unprotect_*`: above any UDP payload, and far
/// below the 2^16 keystream blocks AES-CM allows per packet (RFC 3711 §4.1.1).
pub const MAX_PACKET_LEN: usize = 65_536;

const RTP_VERSION: u8 = 2; // RFC 3550 §5.1
const RTP_FIXED_HEADER_LEN: usize = 12; // RFC 3550 §5.1
const RTP_EXTENSION_HEADER_LEN: usize = 4; // RFC 3550 §5.3.1
const RTCP_CLEAR_LEN: usize = 8; // RFC 3711 §3.4: header and sender SSRC are not encrypted
const SRTCP_TRAILER_LEN: usize = 4; // RFC 3711 §3.4: E flag + SRTCP index
const SRTCP_E_FLAG: u32 = 0x8000_0000; // RFC 3711 §3.4
const SRTCP_INDEX_MAX: u32 = 0x7fff_ffff; // RFC 3711 §3.4: 31-bit index
const RTP_INDEX_MAX: u64 = (1 << 48) - 1; // RFC 3711 §3.3.1: 48-bit packet index
const HALF_SEQ: u16 = 0x8000; // RFC 3711 Appendix A: 2^15

const AES_128_KEY_LEN: usize = 16; // RFC 3711 §4.1.1, RFC 7714 §14.2: 128-bit keys
const AES_256_KEY_LEN: usize = 32; // RFC 7714 §14.2: AEAD_AES_256_GCM, 256-bit keys
const CM_SALT_LEN: usize = 14; // RFC 3711 §4.3.3: n_s = 112 bits
const GCM_SALT_LEN: usize = 12; // RFC 7714 §11: 96-bit salt
const HMAC_KEY_LEN: usize = 20; // RFC 3711 §5.2: n_a = 160 bits
const HMAC_TAG_LEN: usize = 10; // RFC 3711 §5.2: n_tag = 80 bits
const GCM_TAG_LEN: usize = 16; // RFC 7714 §14.2: both GCM profiles, 16-octet tag

// Key derivation labels, RFC 3711 §4.3.1 (RTP) and §4.3.2 (RTCP).
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// A negotiated SRTP protection profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711, RFC 5764 §4.1.2).
    Aes128CmSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (RFC 7714).
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` (RFC 7714): 32-octet master key, 12-octet master salt.
    AeadAes256Gcm,
}

impl SrtpProfile {
    const DTLS_ID_AES128_CM_SHA1_80: u16 = 0x0001; // RFC 5764 §4.1.2
    const DTLS_ID_AEAD_AES_128_GCM: u16 = 0x0007; // RFC 7714 §14.2
    const DTLS_ID_AEAD_AES_256_GCM: u16 = 0x0008; // RFC 7714 §14.2

    /// The profile for a DTLS `use_srtp` protection profile id, if we support it.
    pub const fn from_dtls_id(id: u16) -> Option<Self> {
        match id {
            Self::DTLS_ID_AES128_CM_SHA1_80 => Some(Self::Aes128CmSha1_80),
            Self::DTLS_ID_AEAD_AES_128_GCM => Some(Self::AeadAes128Gcm),
            Self::DTLS_ID_AEAD_AES_256_GCM => Some(Self::AeadAes256Gcm),
            _ => None,
        }
    }

    /// The DTLS `use_srtp` protection profile id.
    pub const fn dtls_id(self) -> u16 {
        match self {
            Self::Aes128CmSha1_80 => Self::DTLS_ID_AES128_CM_SHA1_80,
            Self::AeadAes128Gcm => Self::DTLS_ID_AEAD_AES_128_GCM,
            Self::AeadAes256Gcm => Self::DTLS_ID_AEAD_AES_256_GCM,
        }
    }

    /// Master key length in bytes (also the session encryption key length).
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128CmSha1_80 | Self::AeadAes128Gcm => AES_128_KEY_LEN,
            Self::AeadAes256Gcm => AES_256_KEY_LEN,
        }
    }

    /// Master salt length in bytes.
    pub const fn salt_len(self) -> usize {
        match self {
            Self::Aes128CmSha1_80 => CM_SALT_LEN,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => GCM_SALT_LEN,
        }
    }

    /// Bytes of DTLS-SRTP keying material to export for both directions (RFC 5764 §4.2).
    pub const fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// Bytes `protect_rtp` appends (the tag).
    pub const fn rtp_overhead(self) -> usize {
        match self {
            Self::Aes128CmSha1_80 => HMAC_TAG_LEN,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => GCM_TAG_LEN,
        }
    }

    /// Bytes `protect_rtcp` appends (tag and E flag + SRTCP index).
    pub const fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + SRTCP_TRAILER_LEN
    }
}

/// Why a packet was not protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// Shorter than its header (with CSRCs and extension) plus the trailer and tag.
    TooShort,
    /// Larger than [`MAX_PACKET_LEN`].
    TooLong,
    /// The RTP/RTCP version field is not 2.
    BadVersion,
    /// The master key length does not fit the profile.
    BadKeyLength,
    /// The master salt length does not fit the profile.
    BadSaltLength,
    /// The authentication tag does not match: drop and count.
    AuthFailed,
    /// Already received, or older than the replay window: drop and count.
    Replay,
    /// The key has protected all the packets it may (RFC 3711 §9.2): new keys are needed.
    KeyLimit,
}

impl std::fmt::Display for SrtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TooShort => "SRTP packet shorter than its header and tag",
            Self::TooLong => "SRTP packet larger than 65536 bytes",
            Self::BadVersion => "RTP/RTCP version is not 2",
            Self::BadKeyLength => "SRTP master key length does not fit the profile",
            Self::BadSaltLength => "SRTP master salt length does not fit the profile",
            Self::AuthFailed => "SRTP authentication tag mismatch",
            Self::Replay => "SRTP packet replayed or older than the 128-packet window",
            Self::KeyLimit => "SRTP key exhausted (2^48 RTP or 2^31 SRTCP packets)",
        })
    }
}

impl std::error::Error for SrtpError {}

/// One direction of one SRTP session: the session keys derived from one master key and
/// salt, and the per-SSRC counters and replay windows. Use one context to unprotect what a
/// peer sends (keyed with the peer's write key and salt from the DTLS exporter, RFC 5764
/// §4.2) and another, keyed with our write key and salt, to protect what we send.
pub struct SrtpContext {
    profile: SrtpProfile,
    keys: SessionKeys,
    ssrcs: SsrcTable,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("ssrcs", &self.ssrcs.entries.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys (RFC 3711 §4.3, kdr = 0) for one direction.
    pub fn new(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, SrtpError> {
        if master_key.len() != profile.key_len() {
            return Err(SrtpError::BadKeyLength);
        }
        if master_salt.len() != profile.salt_len() {
            return Err(SrtpError::BadSaltLength);
        }
        let prf = SrtpPrf::new(master_key)?;
        // RFC 7714 §11 with erratum 4938: the 96-bit GCM master salt times 2^16 is the
        // 112-bit PRF salt, i.e. zero-padded on the right (libsrtp does the same).
        let mut salt = [0u8; CM_SALT_LEN];
        for (d, s) in salt.iter_mut().zip(master_salt) {
            *d = *s;
        }
        let keys = match profile {
            SrtpProfile::Aes128CmSha1_80 => SessionKeys::Cm {
                rtp: CmKeys::derive(
                    &prf,
                    &salt,
                    LABEL_RTP_ENCRYPTION,
                    LABEL_RTP_AUTH,
                    LABEL_RTP_SALT,
                )?,
                rtcp: CmKeys::derive(
                    &prf,
                    &salt,
                    LABEL_RTCP_ENCRYPTION,
                    LABEL_RTCP_AUTH,
                    LABEL_RTCP_SALT,
                )?,
            },
            // RFC 7714 §14.2: the session key is as long as the master key.
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => SessionKeys::Gcm {
                rtp: GcmKeys::derive(
                    &prf,
                    &salt,
                    profile.key_len(),
                    LABEL_RTP_ENCRYPTION,
                    LABEL_RTP_SALT,
                )?,
                rtcp: GcmKeys::derive(
                    &prf,
                    &salt,
                    profile.key_len(),
                    LABEL_RTCP_ENCRYPTION,
                    LABEL_RTCP_SALT,
                )?,
            },
        };
        Ok(Self {
            profile,
            keys,
            ssrcs: SsrcTable::new(),
        })
    }

    /// The profile this context was made for.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Verifies, replay-checks and decrypts an SRTP packet in place. Returns the length of
    /// the RTP packet (header and payload, tag removed) at the front of `pkt`. On error the
    /// packet must be dropped; its bytes are then unspecified.
    pub fn unprotect_rtp(&mut self, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        if pkt.len() > MAX_PACKET_LEN {
            return Err(SrtpError::TooLong);
        }
        let header = RtpHeader::parse(pkt)?;
        let body_len = pkt
            .len()
            .checked_sub(self.profile.rtp_overhead())
            .filter(|&n| n >= header.len)
            .ok_or(SrtpError::TooShort)?;
        let mut state = self.ssrcs.lookup(header.ssrc);
        let index = match &state.rtp_rx {
            Some(window) => {
                let index = estimate_index(window.top, header.seq)?;
                window.check(index)?;
                index
            }
            // RFC 3711 §3.3.1: the first packet of an SSRC sets s_l = SEQ with ROC = 0.
            None => u64::from(header.seq),
        };
        let (packet, tag) = pkt
            .split_at_mut_checked(body_len)
            .ok_or(SrtpError::TooShort)?;
        match &self.keys {
            SessionKeys::Cm { rtp, .. } => {
                // RFC 3711 §4.2: the tag covers the packet and the ROC; check it first.
                rtp.verify(&[packet, &roc_of(index).to_be_bytes()], tag)?;
                let payload = packet.get_mut(header.len..).ok_or(SrtpError::TooShort)?;
                rtp.apply_keystream(header.ssrc, index, payload);
            }
            SessionKeys::Gcm { rtp, .. } => {
                // RFC 7714 §8: the header is the associated data, the payload the plaintext.
                let (aad, payload) = packet
                    .split_at_mut_checked(header.len)
                    .ok_or(SrtpError::TooShort)?;
                rtp.open(header.ssrc, index, aad, payload, tag)?;
            }
        }
        // RFC 3711 §3.3: ROC, s_l and the replay list move only after authentication.
        match &mut state.rtp_rx {
            Some(window) => window.accept(index),
            None => state.rtp_rx = Some(ReplayWindow::new(index)),
        }
        self.ssrcs.store(state);
        Ok(body_len)
    }

    /// Encrypts an RTP packet in place and appends the tag. A repeated sequence number is
    /// protected again with the same index: that is safe only for byte-identical
    /// retransmissions, so never reuse a sequence number for different content.
    /// [`SrtpError::Replay`] here means `seq` lies more than 2^15 before the first sequence
    /// number this context protected for the SSRC (its index would be negative).
    /// On error `pkt` is unchanged.
    pub fn protect_rtp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        if pkt.len() > MAX_PACKET_LEN {
            return Err(SrtpError::TooLong);
        }
        let header = RtpHeader::parse(pkt)?;
        let mut state = self.ssrcs.lookup(header.ssrc);
        let index = match state.rtp_tx {
            Some(top) => estimate_index(top, header.seq)?,
            None => u64::from(header.seq),
        };
        match &self.keys {
            SessionKeys::Cm { rtp, .. } => {
                let payload = pkt.get_mut(header.len..).ok_or(SrtpError::TooShort)?;
                rtp.apply_keystream(header.ssrc, index, payload);
                let tag = rtp.tag(&[pkt, &roc_of(index).to_be_bytes()]);
                pkt.extend_from_slice(&tag);
            }
            SessionKeys::Gcm { rtp, .. } => {
                let (aad, payload) = pkt
                    .split_at_mut_checked(header.len)
                    .ok_or(SrtpError::TooShort)?;
                let tag = rtp.seal(header.ssrc, index, aad, payload)?;
                pkt.extend_from_slice(&tag);
            }
        }
        state.rtp_tx = Some(state.rtp_tx.map_or(index, |top| top.max(index)));
        self.ssrcs.store(state);
        Ok(())
    }

    /// Verifies, replay-checks and decrypts an SRTCP packet in place. Returns the length of
    /// the compound RTCP packet at the front of `pkt` (trailer and tag removed). On error
    /// the packet must be dropped; its bytes are then unspecified.
    pub fn unprotect_rtcp(&mut self, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        if pkt.len() > MAX_PACKET_LEN {
            return Err(SrtpError::TooLong);
        }
        let ssrc = rtcp_sender_ssrc(pkt)?;
        let tag_len = self.profile.rtp_overhead();
        // AES-CM (RFC 3711 §3.4):  | RTCP | E + index | tag (10) |
        // GCM (RFC 7714 §9):       | RTCP | tag (16)  | E + index |
        let (body_len, trailer_at) = match self.profile {
            SrtpProfile::Aes128CmSha1_80 => {
                let at = pkt.len().checked_sub(tag_len + SRTCP_TRAILER_LEN);
                (at, at)
            }
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => {
                let at = pkt.len().checked_sub(SRTCP_TRAILER_LEN);
                (at.and_then(|n| n.checked_sub(tag_len)), at)
            }
        };
        let body_len = body_len
            .filter(|&n| n >= RTCP_CLEAR_LEN)
            .ok_or(SrtpError::TooShort)?;
        let trailer_at = trailer_at.ok_or(SrtpError::TooShort)?;
        let trailer = read_u32(pkt, trailer_at).ok_or(SrtpError::TooShort)?;
        let encrypted = trailer & SRTCP_E_FLAG != 0;
        let index = trailer & SRTCP_INDEX_MAX;
        let mut state = self.ssrcs.lookup(ssrc);
        if let Some(window) = &state.rtcp_rx {
            window.check(u64::from(index))?;
        }
        match &self.keys {
            SessionKeys::Cm { rtcp, .. } => {
                let (authed, tag) = pkt
                    .split_at_mut_checked(body_len + SRTCP_TRAILER_LEN)
                    .ok_or(SrtpError::TooShort)?;
                rtcp.verify(&[authed], tag)?;
                if encrypted {
                    let payload = authed
                        .get_mut(RTCP_CLEAR_LEN..body_len)
                        .ok_or(SrtpError::TooShort)?;
                    rtcp.apply_keystream(ssrc, u64::from(index), payload);
                }
            }
            SessionKeys::Gcm { rtcp, .. } => {
                if encrypted {
                    // RFC 7714 §9: AAD = first 8 octets || E + SRTCP index.
                    let aad = srtcp_gcm_aad(pkt, trailer)?;
                    let (body, rest) = pkt
                        .split_at_mut_checked(body_len)
                        .ok_or(SrtpError::TooShort)?;
                    let payload = body.get_mut(RTCP_CLEAR_LEN..).ok_or(SrtpError::TooShort)?;
                    let tag = rest.get(..tag_len).ok_or(SrtpError::TooShort)?;
                    rtcp.open(ssrc, u64::from(index), &aad, payload, tag)?;
                } else {
                    // RFC 7714 §9: with E = 0 the AAD is the whole RTCP packet || E + index, no
                    // ciphertext. Move the trailer ahead of the tag so the AAD is one slice.
                    pkt.get_mut(body_len..)
                        .ok_or(SrtpError::TooShort)?
                        .rotate_right(SRTCP_TRAILER_LEN);
                    let (aad, tag) = pkt
                        .split_at_mut_checked(body_len + SRTCP_TRAILER_LEN)
                        .ok_or(SrtpError::TooShort)?;
                    rtcp.open(ssrc, u64::from(index), aad, &mut [], tag)?;
                }
            }
        }
        match &mut state.rtcp_rx {
            Some(window) => window.accept(u64::from(index)),
            None => state.rtcp_rx = Some(ReplayWindow::new(u64::from(index))),
        }
        self.ssrcs.store(state);
        Ok(body_len)
    }

    /// Encrypts a compound RTCP packet in place and appends the E flag, the SRTCP index and
    /// the tag. The first packet of each SSRC gets index 1, as libsrtp does.
    pub fn protect_rtcp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        if pkt.len() > MAX_PACKET_LEN {
            return Err(SrtpError::TooLong);
        }
        let ssrc = rtcp_sender_ssrc(pkt)?;
        let mut state = self.ssrcs.lookup(ssrc);
        let index = state
            .rtcp_tx
            .checked_add(1)
            .filter(|&i| i <= SRTCP_INDEX_MAX)
            .ok_or(SrtpError::KeyLimit)?;
        let trailer = SRTCP_E_FLAG | index;
        match &self.keys {
            SessionKeys::Cm { rtcp, .. } => {
                let payload = pkt.get_mut(RTCP_CLEAR_LEN..).ok_or(SrtpError::TooShort)?;
                rtcp.apply_keystream(ssrc, u64::from(index), payload);
                pkt.extend_from_slice(&trailer.to_be_bytes());
                let tag = rtcp.tag(&[pkt]);
                pkt.extend_from_slice(&tag);
            }
            SessionKeys::Gcm { rtcp, .. } => {
                let aad = srtcp_gcm_aad(pkt, trailer)?;
                let payload = pkt.get_mut(RTCP_CLEAR_LEN..).ok_or(SrtpError::TooShort)?;
                let tag = rtcp.seal(ssrc, u64::from(index), &aad, payload)?;
                pkt.extend_from_slice(&tag);
                pkt.extend_from_slice(&trailer.to_be_bytes());
            }
        }
        state.rtcp_tx = index;
        self.ssrcs.store(state);
        Ok(())
    }

    /// Test hook: make the next SRTCP packet of `ssrc` carry index `last_sent + 1`.
    #[cfg(test)]
    fn set_srtcp_sent_index(&mut self, ssrc: u32, last_sent: u32) {
        let mut state = self.ssrcs.lookup(ssrc);
        state.rtcp_tx = last_sent;
        self.ssrcs.store(state);
    }
}

/// Session keys of both RTP and RTCP for one profile. Both variants are large and a
/// context holds exactly one, so boxing would only add an indirection per packet.
#[allow(clippy::large_enum_variant)]
enum SessionKeys {
    Cm { rtp: CmKeys, rtcp: CmKeys },
    Gcm { rtp: GcmKeys, rtcp: GcmKeys },
}

/// AES-CM encryption key schedule, session salt and pre-keyed HMAC-SHA1 (RFC 3711 §4.1.1,
/// §4.2.1). The HMAC is cloned per packet, which copies its two hash states.
struct CmKeys {
    aes: Aes128Enc,
    salt: [u8; CM_SALT_LEN],
    mac: HmacSha1,
}

impl CmKeys {
    fn derive(
        prf: &SrtpPrf,
        master_salt: &[u8; CM_SALT_LEN],
        enc_label: u8,
        auth_label: u8,
        salt_label: u8,
    ) -> Result<Self, SrtpError> {
        let mut key = [0u8; AES_128_KEY_LEN];
        let mut auth = [0u8; HMAC_KEY_LEN];
        let mut salt = [0u8; CM_SALT_LEN];
        prf.derive(master_salt, enc_label, &mut key);
        prf.derive(master_salt, auth_label, &mut auth);
        prf.derive(master_salt, salt_label, &mut salt);
        Ok(Self {
            aes: Aes128Enc::new_from_slice(&key).map_err(|_| SrtpError::BadKeyLength)?,
            salt,
            mac: <HmacSha1 as Mac>::new_from_slice(&auth).map_err(|_| SrtpError::BadKeyLength)?,
        })
    }

    /// XORs the packet's keystream into `data`. RFC 3711 §4.1.1:
    /// IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
    fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        aes_cm(&self.aes, cm_iv(&self.salt, ssrc, index), data);
    }

    /// The 80-bit tag over the concatenated `parts` (RFC 3711 §4.2.1).
    fn tag(&self, parts: &[&[u8]]) -> [u8; HMAC_TAG_LEN] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; HMAC_TAG_LEN];
        for (d, s) in tag.iter_mut().zip(full.iter()) {
            *d = *s;
        }
        tag
    }

    /// Constant-time check of `tag` against the concatenated `parts`.
    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), SrtpError> {
        if tag.len() != HMAC_TAG_LEN {
            return Err(SrtpError::TooShort);
        }
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_truncated_left(tag)
            .map_err(|_| SrtpError::AuthFailed)
    }
}

/// The PRF of the key derivation (RFC 3711 §4.3.3): AES in counter mode keyed by the master
/// key, AES-128 or, for a 32-octet master key, AES-256 (RFC 6188's AES_256_CM_PRF, which
/// RFC 7714 §11 names for AEAD_AES_256_GCM).
/// The variants are key schedules (about 700 vs 960 bytes); one lives briefly on the stack
/// in [`SrtpContext::new`], so boxing the larger would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum SrtpPrf {
    Aes128(Aes128Enc),
    Aes256(Aes256Enc),
}

impl SrtpPrf {
    fn new(master_key: &[u8]) -> Result<Self, SrtpError> {
        let prf = match master_key.len() {
            AES_128_KEY_LEN => Aes128Enc::new_from_slice(master_key).map(Self::Aes128),
            AES_256_KEY_LEN => Aes256Enc::new_from_slice(master_key).map(Self::Aes256),
            _ => return Err(SrtpError::BadKeyLength),
        };
        prf.map_err(|_| SrtpError::BadKeyLength)
    }

    /// Fills `out` with the session key for `label` (kdr = 0).
    fn derive(&self, master_salt: &[u8; CM_SALT_LEN], label: u8, out: &mut [u8]) {
        match self {
            Self::Aes128(aes) => derive_key(aes, master_salt, label, out),
            Self::Aes256(aes) => derive_key(aes, master_salt, label, out),
        }
    }
}

/// AES-GCM with a 128- or 256-bit session key (RFC 7714 §14.2), GHASH key included.
/// The variants differ only in their AES key schedules (about 740 vs 990 bytes). Boxing
/// the larger would add an indirection per packet to save ~250 bytes in each of the two
/// instances a 128-bit context holds.
#[allow(clippy::large_enum_variant)]
enum GcmAead {
    Aes128(Aes128Gcm),
    Aes256(Aes256Gcm),
}

impl GcmAead {
    /// The AEAD for a session key of 16 or 32 octets.
    fn new(key: &[u8]) -> Result<Self, SrtpError> {
        let aead = match key.len() {
            AES_128_KEY_LEN => Aes128Gcm::new_from_slice(key).map(Self::Aes128),
            AES_256_KEY_LEN => Aes256Gcm::new_from_slice(key).map(Self::Aes256),
            _ => return Err(SrtpError::BadKeyLength),
        };
        aead.map_err(|_| SrtpError::BadKeyLength)
    }
}

/// AES-GCM key (with its GHASH key) and 96-bit session salt (RFC 7714 §8, §9).
struct GcmKeys {
    aead: GcmAead,
    salt: [u8; GCM_SALT_LEN],
}

impl GcmKeys {
    /// Derives a session key of `key_len` octets (16 or 32) and the 96-bit session salt.
    fn derive(
        prf: &SrtpPrf,
        master_salt: &[u8; CM_SALT_LEN],
        key_len: usize,
        enc_label: u8,
        salt_label: u8,
    ) -> Result<Self, SrtpError> {
        let mut buf = [0u8; AES_256_KEY_LEN];
        let key = buf.get_mut(..key_len).ok_or(SrtpError::BadKeyLength)?;
        let mut salt = [0u8; GCM_SALT_LEN];
        prf.derive(master_salt, enc_label, key);
        prf.derive(master_salt, salt_label, &mut salt);
        Ok(Self {
            aead: GcmAead::new(key)?,
            salt,
        })
    }

    /// RFC 7714 §8 (RTP) and §9 (RTCP): IV = (00 00 || SSRC || 48-bit index) XOR salt,
    /// where the index is ROC || SEQ for RTP and 00 00 || 0 || SRTCP index for RTCP.
    fn nonce(&self, ssrc: u32, index: u64) -> aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
        let [s0, s1, s2, s3] = ssrc.to_be_bytes();
        let [_, _, i0, i1, i2, i3, i4, i5] = index.to_be_bytes();
        let mut iv = [0, 0, s0, s1, s2, s3, i0, i1, i2, i3, i4, i5];
        for (b, s) in iv.iter_mut().zip(&self.salt) {
            *b ^= s;
        }
        iv.into()
    }

    fn seal(
        &self,
        ssrc: u32,
        index: u64,
        aad: &[u8],
        text: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN], SrtpError> {
        let nonce = self.nonce(ssrc, index);
        let tag = match &self.aead {
            GcmAead::Aes128(aead) => aead.encrypt_in_place_detached(&nonce, aad, text),
            GcmAead::Aes256(aead) => aead.encrypt_in_place_detached(&nonce, aad, text),
        }
        .map_err(|_| SrtpError::TooLong)?;
        Ok(tag.into())
    }

    fn open(
        &self,
        ssrc: u32,
        index: u64,
        aad: &[u8],
        text: &mut [u8],
        tag: &[u8],
    ) -> Result<(), SrtpError> {
        let tag: [u8; GCM_TAG_LEN] = tag.try_into().map_err(|_| SrtpError::TooShort)?;
        let (nonce, tag) = (self.nonce(ssrc, index), tag.into());
        match &self.aead {
            GcmAead::Aes128(aead) => aead.decrypt_in_place_detached(&nonce, aad, text, &tag),
            GcmAead::Aes256(aead) => aead.decrypt_in_place_detached(&nonce, aad, text, &tag),
        }
        .map_err(|_| SrtpError::AuthFailed)
    }
}

/// AES-CM keystream XORed into `data`, starting from counter block `iv` (RFC 3711 §4.1.1;
/// the counter is the whole block, of which a packet uses only the low 16 bits). `C` is
/// AES-128 or AES-256.
fn aes_cm<C>(aes: &C, iv: [u8; 16], data: &mut [u8])
where
    C: BlockEncrypt + BlockCipher<BlockSize = U16>,
{
    let mut ctr = ctr::Ctr128BE::<&C>::from_core(ctr::CtrCore::inner_iv_init(aes, &iv.into()));
    ctr.apply_keystream(data);
}

/// RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
fn cm_iv(salt: &[u8; CM_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let [s0, s1, s2, s3] = ssrc.to_be_bytes();
    let [_, _, i0, i1, i2, i3, i4, i5] = index.to_be_bytes();
    let mut iv = [0, 0, 0, 0, s0, s1, s2, s3, i0, i1, i2, i3, i4, i5, 0, 0];
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// RFC 3711 §4.3.1 and §4.3.3 with kdr = 0 (so r = 0): key_id = label || r is XORed into
/// the master salt right-aligned, which puts the label on octet 7; the AES-CM PRF runs from
/// x * 2^16. Same IV layout as a packet IV whose "SSRC" is the label. The AES-256 PRF
/// (RFC 6188) differs only in its key.
fn derive_key<C>(prf: &C, master_salt: &[u8; CM_SALT_LEN], label: u8, out: &mut [u8])
where
    C: BlockEncrypt + BlockCipher<BlockSize = U16>,
{
    out.fill(0);
    aes_cm(prf, cm_iv(master_salt, u32::from(label), 0), out);
}

/// RFC 3711 Appendix A: the index of `seq` given the highest index `top` seen so far,
/// choosing among ROC - 1, ROC and ROC + 1 the one nearest to s_l.
fn estimate_index(top: u64, seq: u16) -> Result<u64, SrtpError> {
    let roc = top >> 16;
    let s_l = (top & 0xffff) as u16;
    let v = if s_l < HALF_SEQ {
        if seq > s_l && seq - s_l > HALF_SEQ {
            // Before the first packet of the stream when ROC is 0: nothing to accept.
            roc.checked_sub(1).ok_or(SrtpError::Replay)?
        } else {
            roc
        }
    } else if s_l - HALF_SEQ > seq {
        roc + 1
    } else {
        roc
    };
    let index = (v << 16) | u64::from(seq);
    if index > RTP_INDEX_MAX {
        return Err(SrtpError::KeyLimit);
    }
    Ok(index)
}

/// The ROC part of a 48-bit index.
fn roc_of(index: u64) -> u32 {
    // index <= RTP_INDEX_MAX, so the shifted value has at most 32 bits.
    (index >> 16) as u32
}

/// Replay list (RFC 3711 §3.3.2) as a sliding bitmap below the highest accepted index.
#[derive(Clone, Copy, Debug)]
struct ReplayWindow {
    /// Highest index accepted.
    top: u64,
    /// Bit k set: index `top - k` was accepted.
    seen: u128,
}

impl ReplayWindow {
    fn new(index: u64) -> Self {
        Self {
            top: index,
            seen: 1,
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(behind) = self.top.checked_sub(index) else {
            return Ok(());
        };
        if behind >= REPLAY_WINDOW || (self.seen >> behind) & 1 == 1 {
            return Err(SrtpError::Replay);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        match index.checked_sub(self.top) {
            Some(0) => self.seen |= 1,
            Some(ahead) => {
                self.seen = u32::try_from(ahead)
                    .ok()
                    .and_then(|n| self.seen.checked_shl(n))
                    .unwrap_or(0)
                    | 1;
                self.top = index;
            }
            None => {
                let behind = self.top - index;
                if behind < REPLAY_WINDOW {
                    self.seen |= 1 << behind;
                }
            }
        }
    }
}

/// Per-SSRC state of one context.
#[derive(Clone, Copy, Debug)]
struct SsrcState {
    ssrc: u32,
    /// Table clock at the last use, for LRU eviction.
    last_used: u64,
    /// Receive: highest SRTP index accepted and replay bitmap.
    rtp_rx: Option<ReplayWindow>,
    /// Send: highest SRTP index protected.
    rtp_tx: Option<u64>,
    /// Receive: highest SRTCP index accepted and replay bitmap.
    rtcp_rx: Option<ReplayWindow>,
    /// Send: last SRTCP index used (0 before the first packet).
    rtcp_tx: u32,
}

/// At most [`MAX_SSRCS`] states, allocated once. Lookup copies a state out; `store` writes
/// it back, evicting the least recently used state when a new SSRC finds the table full.
struct SsrcTable {
    entries: Vec<SsrcState>,
    clock: u64,
}

impl SsrcTable {
    fn new() -> Self {
        Self {
            entries: Vec::with_capacity(MAX_SSRCS),
            clock: 0,
        }
    }

    fn lookup(&self, ssrc: u32) -> SsrcState {
        self.entries
            .iter()
            .find(|s| s.ssrc == ssrc)
            .copied()
            .unwrap_or(SsrcState {
                ssrc,
                last_used: 0,
                rtp_rx: None,
                rtp_tx: None,
                rtcp_rx: None,
                rtcp_tx: 0,
            })
    }

    fn store(&mut self, mut state: SsrcState) {
        self.clock = self.clock.wrapping_add(1);
        state.last_used = self.clock;
        if let Some(slot) = self.entries.iter_mut().find(|s| s.ssrc == state.ssrc) {
            *slot = state;
        } else if self.entries.len() < MAX_SSRCS {
            self.entries.push(state);
        } else if let Some(victim) = self.entries.iter_mut().min_by_key(|s| s.last_used) {
            *victim = state;
        }
    }
}

/// What SRTP needs from an RTP header (RFC 3550 §5.1, §5.3.1):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |V=2|P|X|  CC   |M|     PT      |       sequence number         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                           timestamp                           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                             SSRC                              |
/// +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
/// |                 CSRC list: CC words                           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | if X: profile-defined         |     length (32-bit words)     |
/// |       extension: `length` words                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// SRTP encrypts what follows (RFC 3711 §3.1); padding is inside the encrypted payload.
struct RtpHeader {
    /// Header length including CSRCs and the extension.
    len: usize,
    seq: u16,
    ssrc: u32,
}

impl RtpHeader {
    fn parse(pkt: &[u8]) -> Result<Self, SrtpError> {
        let first = *pkt.first().ok_or(SrtpError::TooShort)?;
        if first >> 6 != RTP_VERSION {
            return Err(SrtpError::BadVersion);
        }
        let seq = read_u16(pkt, 2).ok_or(SrtpError::TooShort)?;
        let ssrc = read_u32(pkt, 8).ok_or(SrtpError::TooShort)?;
        let csrc_count = usize::from(first & 0x0f);
        let mut len = RTP_FIXED_HEADER_LEN + 4 * csrc_count;
        if first & 0x10 != 0 {
            let words = read_u16(pkt, len + 2).ok_or(SrtpError::TooShort)?;
            len += RTP_EXTENSION_HEADER_LEN + 4 * usize::from(words);
        }
        if len > pkt.len() {
            return Err(SrtpError::TooShort);
        }
        Ok(Self { len, seq, ssrc })
    }
}

/// Version check and sender SSRC of the first RTCP packet of a compound (RFC 3550 §6.4).
fn rtcp_sender_ssrc(pkt: &[u8]) -> Result<u32, SrtpError> {
    let first = *pkt.first().ok_or(SrtpError::TooShort)?;
    if first >> 6 != RTP_VERSION {
        return Err(SrtpError::BadVersion);
    }
    read_u32(pkt, 4).ok_or(SrtpError::TooShort)
}

/// RFC 7714 §9: the AAD of encrypted SRTCP, first 8 octets || E flag + SRTCP index.
fn srtcp_gcm_aad(pkt: &[u8], trailer: u32) -> Result<[u8; 12], SrtpError> {
    let clear = pkt.get(..RTCP_CLEAR_LEN).ok_or(SrtpError::TooShort)?;
    let mut aad = [0u8; RTCP_CLEAR_LEN + SRTCP_TRAILER_LEN];
    for (d, s) in aad
        .iter_mut()
        .zip(clear.iter().chain(&trailer.to_be_bytes()))
    {
        *d = *s;
    }
    Ok(aad)
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod vectors {
    //! Published vectors, copied as printed: RFC 3711 Appendix B.2 and B.3, RFC 6188 §7.2
    //! (AES-256 key derivation), RFC 7714 §16 and §17 (AEAD_AES_128_GCM and
    //! AEAD_AES_256_GCM, session keys given directly), and libsrtp's reference packets
    //! (`srtp_validate`, `srtp_validate_gcm` in its test driver), which run the
    //! whole path from master key to packet the way browsers' libsrtp does.
    use super::*;

    /// RFC 3711 Appendix B.2: AES-CM keystream, session key and salt given, SSRC = 0,
    /// index = 0. The IV is the printed "Offset".
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        assert_eq!(
            cm_iv(&salt, 0, 0).to_vec(),
            hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
        );
        let aes = Aes128Enc::new_from_slice(&key).unwrap();
        let mut stream = vec![0u8; 0xff02 * 16];
        aes_cm(&aes, cm_iv(&salt, 0, 0), &mut stream);
        let block = |n: usize| stream[n * 16..(n + 1) * 16].to_vec();
        assert_eq!(block(0x0000), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(0x0001), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(0x0002), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    /// RFC 3711 Appendix B.3: key derivation, kdr = 0, index = 0.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let master_key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let master_salt: [u8; 14] = hex("0EC675AD498AFEEBB6960B3AABE6").try_into().unwrap();
        let prf = Aes128Enc::new_from_slice(&master_key).unwrap();

        let mut cipher_key = [0u8; 16];
        derive_key(&prf, &master_salt, LABEL_RTP_ENCRYPTION, &mut cipher_key);
        assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));

        let mut cipher_salt = [0u8; 14];
        derive_key(&prf, &master_salt, LABEL_RTP_SALT, &mut cipher_salt);
        assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));

        // The RFC prints 94 octets of the authentication key stream.
        let mut auth_key = [0u8; 94];
        derive_key(&prf, &master_salt, LABEL_RTP_AUTH, &mut auth_key);
        assert_eq!(
            auth_key.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A15
                 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098
                 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576
                 6B68642C59BBFC2F34DB60DBDFB2")
        );
    }

    /// RFC 6188 §7.2: key derivation with the AES-256 PRF (AES_256_CM_PRF), kdr = 0,
    /// index = 0: a 32-octet master key, the 112-bit master salt, 256-bit session key.
    #[test]
    fn rfc6188_7_2_aes256_key_derivation() {
        let master_key = hex("f0f04914b513f2763a1b1fa130f10e29
                              98f6f6e43e4309d1e622a0e332b9f1b6");
        let master_salt: [u8; 14] = hex("3b04803de51ee7c96423ab5b78d2").try_into().unwrap();
        let prf = SrtpPrf::new(&master_key).unwrap();
        assert!(matches!(prf, SrtpPrf::Aes256(_)));

        let mut cipher_key = [0u8; 32];
        prf.derive(&master_salt, LABEL_RTP_ENCRYPTION, &mut cipher_key);
        assert_eq!(
            cipher_key.to_vec(),
            hex("5ba1064e30ec51613cad926c5a28ef73
                 1ec7fb397f70a960653caf06554cd8c4")
        );

        let mut cipher_salt = [0u8; 14];
        prf.derive(&master_salt, LABEL_RTP_SALT, &mut cipher_salt);
        assert_eq!(cipher_salt.to_vec(), hex("fa31791685ca444a9e07c6c64e93"));

        let mut auth_key = [0u8; 20];
        prf.derive(&master_salt, LABEL_RTP_AUTH, &mut auth_key);
        assert_eq!(
            auth_key.to_vec(),
            hex("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05")
        );
    }

    // RFC 7714 §16 and §17: key and salt are the *session* key and salt, for RTP and RTCP.
    const RFC7714_KEY: &str = "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f";
    const RFC7714_KEY_256: &str = "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f
                                   10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f";
    const RFC7714_SALT: &str = "51 75 69 64 20 70 72 6f 20 71 75 6f";
    const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c
                               69612065 7374206f 6d6e6973 20646976
                               69736120 696e2070 61727465 73207472
                               6573";
    const RFC7714_SRTP: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3
                                fb34de6c acba861c 9d7e4bca be633bd5
                                0d294e6f 42a5f47a 51c7d19b 36de3adf
                                8833899d 7f27beb1 6a9152cf 765ee439
                                0cce";
    const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032
                                52545020 0000042a 0000e930 4c756e61
                                deadbeef deadbeef deadbeef deadbeef
                                deadbeef";
    const RFC7714_SRTCP: &str = "81c8000d 4d617273 63e94885 dcdab67c
                                 a727d766 2f6b7e99 7ff5c0f7 6c06f32d
                                 c676a5f1 730d6fda 4ce09b46 86303ded
                                 0bb9275b c84aa458 96cf4d2f c5abf872
                                 45d9eade 800005d4";
    const RFC7714_SRTCP_AUTH_ONLY: &str = "81c8000d 4d617273 4e545031 4e545032
                                           52545020 0000042a 0000e930 4c756e61
                                           deadbeef deadbeef deadbeef deadbeef
                                           deadbeef 841dd968 3dd78ec9 2ae58790
                                           125f62b3 000005d4";
    // §16.2.1 / §16.2.2: the same RTP packet under AEAD_AES_256_GCM.
    const RFC7714_SRTP_256: &str = "8040f17b 8041f8d3 5501a0b2 32b1de78
                                    a822fe12 ef9f78fa 332e33aa b1801238
                                    9a58e2f3 b50b2a02 76ffae0f 1ba63799
                                    b87b7aa3 db36dfff d6b0f9bb 7878d7a7
                                    6c13";
    // §17.2: the same RTCP packet under AEAD_AES_256_GCM, SRTCP index 0x5d4.
    const RFC7714_SRTCP_256: &str = "81c8000d 4d617273 d50ae4d1 f5ce5d30
                                     4ba297e4 7d470c28 2c3ece5d bffe0a50
                                     a2eaa5c1 110555be 8415f658 c61de047
                                     6f1b6fad 1d1eb30c 4446839f 57ff6f6c
                                     b26ac3be 800005d4";
    // §17.4: AEAD_AES_256_GCM authentication only (E = 0).
    const RFC7714_SRTCP_256_AUTH_ONLY: &str = "81c8000d 4d617273 4e545031 4e545032
                                               52545020 0000042a 0000e930 4c756e61
                                               deadbeef deadbeef deadbeef deadbeef
                                               deadbeef 91db4afb feee5a97 8fab4393
                                               ed2615fe 000005d4";

    /// A GCM context of `profile` with the RFC 7714 session key (`key`, hex) and salt for
    /// RTP and RTCP alike.
    fn rfc7714_context_with(profile: SrtpProfile, key: &str) -> SrtpContext {
        let keys = || GcmKeys {
            aead: GcmAead::new(&hex(key)).unwrap(),
            salt: hex(RFC7714_SALT).try_into().unwrap(),
        };
        SrtpContext {
            profile,
            keys: SessionKeys::Gcm {
                rtp: keys(),
                rtcp: keys(),
            },
            ssrcs: SsrcTable::new(),
        }
    }

    /// The AEAD_AES_128_GCM context of RFC 7714 §16.1 and §17.1.
    fn rfc7714_context() -> SrtpContext {
        rfc7714_context_with(SrtpProfile::AeadAes128Gcm, RFC7714_KEY)
    }

    /// The AEAD_AES_256_GCM context of RFC 7714 §16.2 and §17.2.
    fn rfc7714_context_256() -> SrtpContext {
        let ctx = rfc7714_context_with(SrtpProfile::AeadAes256Gcm, RFC7714_KEY_256);
        let SessionKeys::Gcm { rtp, rtcp } = &ctx.keys else {
            unreachable!()
        };
        assert!(matches!(rtp.aead, GcmAead::Aes256(_)));
        assert!(matches!(rtcp.aead, GcmAead::Aes256(_)));
        ctx
    }

    #[test]
    fn rfc7714_nonces() {
        let ctx = rfc7714_context();
        let SessionKeys::Gcm { rtp, .. } = &ctx.keys else {
            unreachable!()
        };
        // §16.1: SSRC 5501a0b2, ROC 0, SEQ f17b.
        assert_eq!(
            rtp.nonce(0x5501a0b2, 0xf17b).to_vec(),
            hex("51 75 3c 65 80 c2 72 6f 20 71 84 14")
        );
        // §17.1: SSRC 4d617273, SRTCP index 5d4.
        assert_eq!(
            rtp.nonce(0x4d617273, 0x5d4).to_vec(),
            hex("51 75 24 05 52 03 72 6f 20 71 70 bb")
        );
    }

    /// RFC 7714 §16.1.1: RTP AEAD_AES_128_GCM encryption.
    #[test]
    fn rfc7714_16_1_1_rtp_encrypt() {
        let mut pkt = hex(RFC7714_RTP);
        rfc7714_context().protect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt, hex(RFC7714_SRTP));
    }

    /// RFC 7714 §16.1.2: RTP AEAD_AES_128_GCM decryption.
    #[test]
    fn rfc7714_16_1_2_rtp_decrypt() {
        let mut pkt = hex(RFC7714_SRTP);
        let n = rfc7714_context().unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(RFC7714_RTP)[..]);
    }

    /// RFC 7714 §17.1: SRTCP AEAD_AES_128_GCM encryption, SRTCP index 0x5d4.
    #[test]
    fn rfc7714_17_1_rtcp_encrypt() {
        let mut ctx = rfc7714_context();
        ctx.set_srtcp_sent_index(0x4d617273, 0x5d3);
        let mut pkt = hex(RFC7714_RTCP);
        ctx.protect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt, hex(RFC7714_SRTCP));
    }

    /// RFC 7714 §17.1: SRTCP AEAD_AES_128_GCM decryption.
    #[test]
    fn rfc7714_17_1_rtcp_decrypt() {
        let mut pkt = hex(RFC7714_SRTCP);
        let n = rfc7714_context().unprotect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(RFC7714_RTCP)[..]);
    }

    /// RFC 7714 §17: SRTCP authentication only (E = 0), verified on receive.
    #[test]
    fn rfc7714_17_rtcp_authentication_only() {
        let mut ctx = rfc7714_context();
        let mut pkt = hex(RFC7714_SRTCP_AUTH_ONLY);
        let n = ctx.unprotect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(RFC7714_RTCP)[..]);
        // A flipped bit of the clear payload fails.
        let mut bad = hex(RFC7714_SRTCP_AUTH_ONLY);
        bad[20] ^= 1;
        assert_eq!(
            rfc7714_context().unprotect_rtcp(&mut bad),
            Err(SrtpError::AuthFailed)
        );
    }

    /// RFC 7714 §16.2.1: RTP AEAD_AES_256_GCM encryption.
    #[test]
    fn rfc7714_16_2_1_rtp_encrypt_256() {
        let mut pkt = hex(RFC7714_RTP);
        rfc7714_context_256().protect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt, hex(RFC7714_SRTP_256));
    }

    /// RFC 7714 §16.2.2: RTP AEAD_AES_256_GCM decryption; a flipped bit fails.
    #[test]
    fn rfc7714_16_2_2_rtp_decrypt_256() {
        let mut pkt = hex(RFC7714_SRTP_256);
        let n = rfc7714_context_256().unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(RFC7714_RTP)[..]);
        // The 128-bit key that shares the first 16 octets does not open it.
        let mut pkt = hex(RFC7714_SRTP_256);
        assert_eq!(
            rfc7714_context().unprotect_rtp(&mut pkt),
            Err(SrtpError::AuthFailed)
        );
        let mut bad = hex(RFC7714_SRTP_256);
        bad[30] ^= 0x80;
        assert_eq!(
            rfc7714_context_256().unprotect_rtp(&mut bad),
            Err(SrtpError::AuthFailed)
        );
    }

    /// RFC 7714 §17.2: SRTCP AEAD_AES_256_GCM encryption, SRTCP index 0x5d4.
    #[test]
    fn rfc7714_17_2_rtcp_encrypt_256() {
        let mut ctx = rfc7714_context_256();
        ctx.set_srtcp_sent_index(0x4d617273, 0x5d3);
        let mut pkt = hex(RFC7714_RTCP);
        ctx.protect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt, hex(RFC7714_SRTCP_256));
    }

    /// RFC 7714 §17.2: SRTCP AEAD_AES_256_GCM decryption.
    #[test]
    fn rfc7714_17_2_rtcp_decrypt_256() {
        let mut pkt = hex(RFC7714_SRTCP_256);
        let n = rfc7714_context_256().unprotect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(RFC7714_RTCP)[..]);
    }

    /// RFC 7714 §17.4: SRTCP AEAD_AES_256_GCM authentication only (E = 0).
    #[test]
    fn rfc7714_17_4_rtcp_authentication_only_256() {
        let mut pkt = hex(RFC7714_SRTCP_256_AUTH_ONLY);
        let n = rfc7714_context_256().unprotect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(RFC7714_RTCP)[..]);
        let mut bad = hex(RFC7714_SRTCP_256_AUTH_ONLY);
        bad[20] ^= 1;
        assert_eq!(
            rfc7714_context_256().unprotect_rtcp(&mut bad),
            Err(SrtpError::AuthFailed)
        );
    }

    const LIBSRTP_RTP: &str = "800f1234 decafbad cafebabe abababab
                               abababab abababab abababab";
    const LIBSRTP_RTCP: &str = "81c8000b cafebabe abababab abababab
                                abababab abababab";

    /// libsrtp `srtp_validate`: AES_CM_128_HMAC_SHA1_80 from the RFC 3711 B.3 master key.
    #[test]
    fn libsrtp_reference_aes_cm() {
        let key = hex("e1f97a0d3e018be0d64fa32c06de4139");
        let salt = hex("0ec675ad498afeebb6960b3aabe6");
        let srtp = hex(
            "800f1234 decafbad cafebabe 4e55dc4c e79978d8 8ca4d215 949d2402 b78d6acc
             99ea179b 8dbb",
        );
        let srtcp = hex(
            "81c8000b cafebabe 7128035b e487b9bd bef89041 f977a5a8 80000001 993e08cd
             54d6c123 0798",
        );
        let mut tx = SrtpContext::new(SrtpProfile::Aes128CmSha1_80, &key, &salt).unwrap();
        let mut pkt = hex(LIBSRTP_RTP);
        tx.protect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt, srtp);
        let mut pkt = hex(LIBSRTP_RTCP);
        tx.protect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt, srtcp);

        let mut rx = SrtpContext::new(SrtpProfile::Aes128CmSha1_80, &key, &salt).unwrap();
        let mut pkt = srtp.clone();
        let n = rx.unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(LIBSRTP_RTP)[..]);
        let mut pkt = srtcp.clone();
        let n = rx.unprotect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(LIBSRTP_RTCP)[..]);
    }

    /// libsrtp `srtp_validate_gcm`: AEAD_AES_128_GCM from a master key and 96-bit master
    /// salt, which checks the salt padding of the key derivation.
    #[test]
    fn libsrtp_reference_aes_gcm() {
        let key = hex("000102030405060708090a0b0c0d0e0f");
        let salt = hex("a0a1a2a3a4a5a6a7a8a9aaab");
        let srtp = hex(
            "800f1234 decafbad cafebabe c5002ede 04cfdd2e b91159e0 880aa06e d2976826
             f796b201 df3131a1 27e8a392",
        );
        let srtcp = hex(
            "81c8000b cafebabe c98b8b5d f0392a55 852b6c21 ac8e7025 c52c6fbe a2b3b446
             ea31123b a88ce61e 80000001",
        );
        let mut tx = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &key, &salt).unwrap();
        let mut pkt = hex(LIBSRTP_RTP);
        tx.protect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt, srtp);
        let mut pkt = hex(LIBSRTP_RTCP);
        tx.protect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt, srtcp);

        let mut rx = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &key, &salt).unwrap();
        let mut pkt = srtp.clone();
        let n = rx.unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(LIBSRTP_RTP)[..]);
        let mut pkt = srtcp.clone();
        let n = rx.unprotect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt[..n], hex(LIBSRTP_RTCP)[..]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const PROFILES: [SrtpProfile; 3] = [
        SrtpProfile::Aes128CmSha1_80,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ];

    /// Sender and receiver contexts sharing one master key.
    fn pair(profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
        let key: Vec<u8> = (1..=profile.key_len() as u8).collect();
        let salt: Vec<u8> = (0x40..0x40 + profile.salt_len() as u8).collect();
        (
            SrtpContext::new(profile, &key, &salt).unwrap(),
            SrtpContext::new(profile, &key, &salt).unwrap(),
        )
    }

    fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7) ^ seq as u8));
        p
    }

    /// RTP with two CSRCs and a one-byte-header extension of two words.
    fn rtp_with_csrc_and_extension(seq: u16) -> Vec<u8> {
        let mut p = vec![0x92, 0xe0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x10, 0]);
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]);
        p.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0xff, 0x21, 0x12, 0x34, 0, 0, 0]);
        p.extend_from_slice(b"payload bytes");
        p
    }

    fn rtcp(ssrc: u32, body: &[u8]) -> Vec<u8> {
        let words = (4 + body.len()) / 4;
        let mut p = vec![0x81, 201];
        p.extend_from_slice(&(words as u16).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    fn protect(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
        let mut p = plain.to_vec();
        ctx.protect_rtp(&mut p).unwrap();
        p
    }

    fn unprotect(ctx: &mut SrtpContext, wire: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut p = wire.to_vec();
        let n = ctx.unprotect_rtp(&mut p)?;
        p.truncate(n);
        Ok(p)
    }

    /// Deterministic bytes for the no-panic loops (xorshift64).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn profile_ids_and_lengths() {
        assert_eq!(
            SrtpProfile::from_dtls_id(0x0001),
            Some(SrtpProfile::Aes128CmSha1_80)
        );
        assert_eq!(
            SrtpProfile::from_dtls_id(0x0007),
            Some(SrtpProfile::AeadAes128Gcm)
        );
        assert_eq!(
            SrtpProfile::from_dtls_id(0x0008),
            Some(SrtpProfile::AeadAes256Gcm)
        );
        // 0x0002 is the 32-bit tag, 0x0009/0x000a the RFC 8723 double profiles.
        for id in [0x0000, 0x0002, 0x0005, 0x0006, 0x0009, 0x000a, 0xffff] {
            assert_eq!(SrtpProfile::from_dtls_id(id), None);
        }
        for p in PROFILES {
            assert_eq!(SrtpProfile::from_dtls_id(p.dtls_id()), Some(p));
        }
        let cm = SrtpProfile::Aes128CmSha1_80;
        let gcm = SrtpProfile::AeadAes128Gcm;
        let gcm256 = SrtpProfile::AeadAes256Gcm;
        assert_eq!(
            (
                gcm256.key_len(),
                gcm256.salt_len(),
                gcm256.keying_material_len()
            ),
            (32, 12, 88)
        );
        assert_eq!((gcm256.rtp_overhead(), gcm256.rtcp_overhead()), (16, 20));
        assert_eq!(gcm256.dtls_id(), 0x0008);
        assert_eq!(
            (cm.key_len(), cm.salt_len(), cm.keying_material_len()),
            (16, 14, 60)
        );
        assert_eq!(
            (gcm.key_len(), gcm.salt_len(), gcm.keying_material_len()),
            (16, 12, 56)
        );
        assert_eq!((cm.rtp_overhead(), cm.rtcp_overhead()), (10, 14));
        assert_eq!((gcm.rtp_overhead(), gcm.rtcp_overhead()), (16, 20));
    }

    #[test]
    fn bad_key_and_salt_lengths() {
        for p in PROFILES {
            let key = vec![0u8; p.key_len()];
            let salt = vec![0u8; p.salt_len()];
            assert!(SrtpContext::new(p, &key, &salt).is_ok());
            assert_eq!(
                SrtpContext::new(p, &key[1..], &salt).err(),
                Some(SrtpError::BadKeyLength)
            );
            // 32 octets for a 128-bit profile, 48 for the 256-bit one.
            assert_eq!(
                SrtpContext::new(p, &vec![0; p.key_len() + 16], &salt).err(),
                Some(SrtpError::BadKeyLength)
            );
            // The other profiles' key lengths (16 <-> 32) are refused too.
            let other = if p.key_len() == 16 { 32 } else { 16 };
            assert_eq!(
                SrtpContext::new(p, &vec![0; other], &salt).err(),
                Some(SrtpError::BadKeyLength)
            );
            assert_eq!(
                SrtpContext::new(p, &key, &salt[1..]).err(),
                Some(SrtpError::BadSaltLength)
            );
            assert_eq!(
                SrtpContext::new(p, &key, &[0; 16]).err(),
                Some(SrtpError::BadSaltLength)
            );
        }
    }

    #[test]
    fn errors_display() {
        for e in [
            SrtpError::TooShort,
            SrtpError::TooLong,
            SrtpError::BadVersion,
            SrtpError::BadKeyLength,
            SrtpError::BadSaltLength,
            SrtpError::AuthFailed,
            SrtpError::Replay,
            SrtpError::KeyLimit,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn rtp_round_trip_every_profile() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            for seq in 1000..1100u16 {
                for (plain, ssrc) in [
                    (rtp(seq, 0xaaaa, seq as usize % 300), 0xaaaa),
                    (rtp_with_csrc_and_extension(seq), 0x1234_5678),
                ] {
                    let wire = protect(&mut tx, &plain);
                    assert_eq!(wire.len(), plain.len() + p.rtp_overhead());
                    let hdr = RtpHeader::parse(&plain).unwrap();
                    assert_eq!(hdr.ssrc, ssrc);
                    // The header stays in the clear; a non-empty payload does not.
                    assert_eq!(wire[..hdr.len], plain[..hdr.len]);
                    if plain.len() > hdr.len + 4 {
                        assert_ne!(wire[hdr.len..plain.len()], plain[hdr.len..]);
                    }
                    assert_eq!(unprotect(&mut rx, &wire).unwrap(), plain);
                }
            }
        }
    }

    #[test]
    fn rtcp_round_trip_every_profile() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            for i in 0..50u32 {
                let plain = rtcp(0xbeef, &vec![i as u8; 4 * (i as usize % 9)]);
                let mut wire = plain.clone();
                tx.protect_rtcp(&mut wire).unwrap();
                assert_eq!(wire.len(), plain.len() + p.rtcp_overhead());
                assert_eq!(wire[..8], plain[..8]);
                let n = rx.unprotect_rtcp(&mut wire).unwrap();
                assert_eq!(wire[..n], plain[..]);
            }
            // SRTCP indexes count per SSRC, from 1.
            let mut wire = rtcp(0x0123, &[9; 8]);
            tx.protect_rtcp(&mut wire).unwrap();
            let at = match p {
                SrtpProfile::Aes128CmSha1_80 => wire.len() - 14,
                SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => wire.len() - 4,
            };
            assert_eq!(wire[at..at + 4], [0x80, 0, 0, 1]);
        }
    }

    #[test]
    fn replayed_rtp_is_rejected() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            let wire = protect(&mut tx, &rtp(10, 5, 100));
            assert!(unprotect(&mut rx, &wire).is_ok());
            assert_eq!(unprotect(&mut rx, &wire), Err(SrtpError::Replay));
        }
    }

    #[test]
    fn replayed_rtcp_is_rejected() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            let mut wire = rtcp(5, &[1; 20]);
            tx.protect_rtcp(&mut wire).unwrap();
            let copy = wire.clone();
            rx.unprotect_rtcp(&mut wire).unwrap();
            let mut again = copy.clone();
            assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replay));
        }
    }

    #[test]
    fn tampering_is_rejected_and_changes_no_state() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            let wire = protect(&mut tx, &rtp(500, 9, 64));
            for at in [
                0,
                3,
                8,
                12,
                40,
                wire.len() - p.rtp_overhead(),
                wire.len() - 1,
            ] {
                let mut bad = wire.clone();
                bad[at] ^= 0x01;
                let got = unprotect(&mut rx, &bad);
                assert!(
                    matches!(got, Err(SrtpError::AuthFailed | SrtpError::BadVersion)),
                    "{p:?} byte {at}: {got:?}"
                );
            }
            // Nothing above moved the window: the genuine packet still goes through, once.
            assert!(unprotect(&mut rx, &wire).is_ok());
            assert_eq!(unprotect(&mut rx, &wire), Err(SrtpError::Replay));

            let mut wire = rtcp(9, &[3; 16]);
            tx.protect_rtcp(&mut wire).unwrap();
            for at in [1, 7, 8, 20, wire.len() - 5, wire.len() - 1] {
                let mut bad = wire.clone();
                bad[at] ^= 0x01;
                assert_eq!(
                    rx.unprotect_rtcp(&mut bad),
                    Err(SrtpError::AuthFailed),
                    "{p:?} byte {at}"
                );
            }
            assert!(rx.unprotect_rtcp(&mut wire.clone()).is_ok());
        }
    }

    #[test]
    fn roc_rolls_over_from_65535_to_0() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            let seqs = [65533u16, 65534, 65535, 0, 1, 2];
            let wires: Vec<Vec<u8>> = seqs
                .iter()
                .map(|&s| protect(&mut tx, &rtp(s, 77, 50)))
                .collect();
            // Delivered with a reorder across the wrap: 65533, 65534, 0, 65535, 2, 1.
            for i in [0, 1, 3, 2, 5, 4] {
                assert_eq!(
                    unprotect(&mut rx, &wires[i]).unwrap(),
                    rtp(seqs[i], 77, 50),
                    "{p:?} seq {}",
                    seqs[i]
                );
            }
            // After the wrap the index is 2^16 + seq: a fresh sender (ROC 0) makes a
            // different packet for the same seq, which the receiver does not accept.
            let (mut fresh, _) = pair(p);
            let roc0 = protect(&mut fresh, &rtp(3, 77, 50));
            let roc1 = protect(&mut tx, &rtp(3, 77, 50));
            assert_ne!(roc0, roc1);
            assert_eq!(unprotect(&mut rx, &roc0), Err(SrtpError::AuthFailed));
            assert_eq!(unprotect(&mut rx, &roc1).unwrap(), rtp(3, 77, 50));
        }
    }

    #[test]
    fn many_wraps_keep_in_step() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            let mut seq = 60000u16;
            for _ in 0..3 * 65536 / 1000 {
                let plain = rtp(seq, 3, 8);
                assert_eq!(
                    unprotect(&mut rx, &protect(&mut tx, &plain)).unwrap(),
                    plain
                );
                seq = seq.wrapping_add(1000);
            }
        }
    }

    #[test]
    fn out_of_order_within_window_accepted_once() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            let wires: Vec<Vec<u8>> = (100..400u16)
                .map(|s| protect(&mut tx, &rtp(s, 1, 20)))
                .collect();
            let w = |seq: u16| &wires[usize::from(seq - 100)];
            assert!(unprotect(&mut rx, w(110)).is_ok());
            assert!(unprotect(&mut rx, w(112)).is_ok());
            assert!(unprotect(&mut rx, w(111)).is_ok());
            assert_eq!(unprotect(&mut rx, w(111)), Err(SrtpError::Replay));
            assert!(
                unprotect(&mut rx, w(105)).is_ok(),
                "before the first packet, still in window"
            );
            // Jump ahead: 300 - 173 = 127 is the oldest index kept, 300 - 172 = 128 is not.
            assert!(unprotect(&mut rx, w(300)).is_ok());
            assert!(unprotect(&mut rx, w(173)).is_ok());
            assert_eq!(unprotect(&mut rx, w(172)), Err(SrtpError::Replay));
            assert_eq!(unprotect(&mut rx, w(112)), Err(SrtpError::Replay));
            assert_eq!(unprotect(&mut rx, w(173)), Err(SrtpError::Replay));
            assert_eq!(unprotect(&mut rx, w(300)), Err(SrtpError::Replay));
        }
    }

    #[test]
    fn rtcp_window_and_order() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            let wires: Vec<Vec<u8>> = (0..200)
                .map(|_| {
                    let mut w = rtcp(44, &[5; 12]);
                    tx.protect_rtcp(&mut w).unwrap();
                    w
                })
                .collect();
            assert!(rx.unprotect_rtcp(&mut wires[150].clone()).is_ok());
            assert!(rx.unprotect_rtcp(&mut wires[149].clone()).is_ok());
            assert!(rx.unprotect_rtcp(&mut wires[23].clone()).is_ok());
            assert_eq!(
                rx.unprotect_rtcp(&mut wires[22].clone()),
                Err(SrtpError::Replay)
            );
            assert_eq!(
                rx.unprotect_rtcp(&mut wires[149].clone()),
                Err(SrtpError::Replay)
            );
            assert!(rx.unprotect_rtcp(&mut wires[199].clone()).is_ok());
        }
    }

    #[test]
    fn srtcp_index_limit() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            tx.set_srtcp_sent_index(8, SRTCP_INDEX_MAX - 1);
            let mut last = rtcp(8, &[]);
            tx.protect_rtcp(&mut last).unwrap();
            assert!(rx.unprotect_rtcp(&mut last).is_ok());
            assert_eq!(tx.protect_rtcp(&mut rtcp(8, &[])), Err(SrtpError::KeyLimit));
        }
    }

    #[test]
    fn index_estimation_edges() {
        assert_eq!(estimate_index(100, 60000), Err(SrtpError::Replay));
        assert_eq!(estimate_index(0x1_0064, 60000), Ok(60000));
        assert_eq!(estimate_index(60000, 5), Ok(0x1_0005));
        assert_eq!(estimate_index(60000, 27232), Ok(27232));
        assert_eq!(estimate_index(RTP_INDEX_MAX, 0xffff), Ok(RTP_INDEX_MAX));
        assert_eq!(estimate_index(RTP_INDEX_MAX, 3), Err(SrtpError::KeyLimit));
    }

    #[test]
    fn ssrc_table_is_bounded_and_evicts_least_recent() {
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            let first = protect(&mut tx, &rtp(1, 0, 10));
            assert!(unprotect(&mut rx, &first).is_ok());
            for ssrc in 1..=MAX_SSRCS as u32 {
                assert!(unprotect(&mut rx, &protect(&mut tx, &rtp(1, ssrc, 10))).is_ok());
                assert!(rx.ssrcs.entries.len() <= MAX_SSRCS);
            }
            assert_eq!(rx.ssrcs.entries.len(), MAX_SSRCS);
            // SSRC 0 was the least recently used and is gone; SSRC 2 is still tracked.
            assert!(rx.ssrcs.entries.iter().all(|s| s.ssrc != 0));
            let again = protect(&mut tx, &rtp(1, 2, 10));
            assert_eq!(unprotect(&mut rx, &again), Err(SrtpError::Replay));
        }
    }

    #[test]
    fn forged_packets_do_not_take_table_slots() {
        for p in PROFILES {
            let (_, mut rx) = pair(p);
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            for ssrc in 0..100u32 {
                let mut forged = rtp(1, ssrc, 30);
                forged.extend(rng.bytes(16));
                assert_eq!(unprotect(&mut rx, &forged), Err(SrtpError::AuthFailed));
            }
            assert!(rx.ssrcs.entries.is_empty());
        }
    }

    #[test]
    fn header_parsing_is_bounds_checked() {
        assert_eq!(RtpHeader::parse(&[]).err(), Some(SrtpError::TooShort));
        assert_eq!(
            RtpHeader::parse(&[0x40; 20]).err(),
            Some(SrtpError::BadVersion)
        );
        assert_eq!(
            RtpHeader::parse(&[0x80; 11]).err(),
            Some(SrtpError::TooShort)
        );
        let plain = rtp_with_csrc_and_extension(1);
        assert_eq!(RtpHeader::parse(&plain).unwrap().len, 12 + 8 + 4 + 8);
        // 15 CSRCs announced, fewer present.
        let mut p = rtp(1, 1, 40);
        p[0] |= 0x0f;
        assert_eq!(RtpHeader::parse(&p).err(), Some(SrtpError::TooShort));
        // Extension length past the end.
        let mut p = rtp(1, 1, 0);
        p[0] |= 0x10;
        p.extend_from_slice(&[0xbe, 0xde, 0xff, 0xff]);
        assert_eq!(RtpHeader::parse(&p).err(), Some(SrtpError::TooShort));
        // A header that fits but leaves no room for the tag.
        for pr in PROFILES {
            let (_, mut rx) = pair(pr);
            let mut short = rtp_with_csrc_and_extension(1);
            short.truncate(32 + pr.rtp_overhead() - 1);
            assert_eq!(rx.unprotect_rtp(&mut short), Err(SrtpError::TooShort));
        }
        for pr in PROFILES {
            let (mut tx, mut rx) = pair(pr);
            let mut big = rtp(1, 1, MAX_PACKET_LEN);
            assert_eq!(tx.protect_rtp(&mut big), Err(SrtpError::TooLong));
            assert_eq!(rx.unprotect_rtp(&mut big), Err(SrtpError::TooLong));
            assert_eq!(rx.unprotect_rtcp(&mut big), Err(SrtpError::TooLong));
            assert_eq!(
                tx.protect_rtcp(&mut vec![0x80, 200, 0, 1, 0, 0, 0]),
                Err(SrtpError::TooShort)
            );
            assert_eq!(
                tx.protect_rtcp(&mut vec![0x00; 8]),
                Err(SrtpError::BadVersion)
            );
        }
    }

    #[test]
    fn every_prefix_is_an_error_not_a_panic() {
        for p in PROFILES {
            let (mut tx, _) = pair(p);
            let srtp = protect(&mut tx, &rtp_with_csrc_and_extension(4));
            let mut srtcp = rtcp(4, &[8; 24]);
            tx.protect_rtcp(&mut srtcp).unwrap();
            for n in 0..srtp.len() {
                let (_, mut rx) = pair(p);
                assert!(
                    rx.unprotect_rtp(&mut srtp[..n].to_vec()).is_err(),
                    "{p:?} rtp prefix {n}"
                );
            }
            for n in 0..srtcp.len() {
                let (_, mut rx) = pair(p);
                assert!(
                    rx.unprotect_rtcp(&mut srtcp[..n].to_vec()).is_err(),
                    "{p:?} rtcp prefix {n}"
                );
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for p in PROFILES {
            let (mut tx, mut rx) = pair(p);
            for _ in 0..3000 {
                let len = (rng.next() % 120) as usize;
                let mut buf = rng.bytes(len);
                if rng.next().is_multiple_of(2) && !buf.is_empty() {
                    buf[0] = 0x80 | (buf[0] & 0x3f); // version 2, random CC/X/P
                }
                let _ = rx.unprotect_rtp(&mut buf.clone());
                let _ = rx.unprotect_rtcp(&mut buf.clone());
                let _ = tx.protect_rtp(&mut buf.clone());
                let _ = tx.protect_rtcp(&mut buf.clone());
            }
            assert!(rx.ssrcs.entries.is_empty());
        }
    }

    #[test]
    fn debug_does_not_print_keys() {
        let (tx, _) = pair(SrtpProfile::AeadAes128Gcm);
        let s = format!("{tx:?}");
        assert!(s.contains("AeadAes128Gcm"), "{s}");
        assert_eq!(tx.profile(), SrtpProfile::AeadAes128Gcm);
        let (tx, _) = pair(SrtpProfile::AeadAes256Gcm);
        let s = format!("{tx:?}");
        assert!(s.contains("AeadAes256Gcm"), "{s}");
        // pair() keys with 01 02 .. 20; neither the key nor a hex dump of it shows up.
        assert!(!s.contains("0102") && !s.contains("[1, 2"), "{s}");
        assert_eq!(tx.profile(), SrtpProfile::AeadAes256Gcm);
    }

    /// RFC 3711 §4.3.1 with the AES-256 PRF, computed here with AES-256 block by block:
    /// x = (master salt * 2^16) XOR (label * 2^48) as a 112-bit value, blocks
    /// E(k_m, x * 2^16 + j) for j = 0, 1, ... concatenated.
    fn independent_aes256_prf(
        master_key: &[u8],
        master_salt: &[u8],
        label: u8,
        len: usize,
    ) -> Vec<u8> {
        use aes::cipher::BlockEncrypt;
        let aes = aes::Aes256::new_from_slice(master_key).unwrap();
        let mut x = [0u8; 16];
        x[..master_salt.len()].copy_from_slice(master_salt); // 96-bit salt * 2^16, * 2^16
        x[7] ^= label; // key_id = label || r (r = 0, 48 bits) lands on octet 7
        let mut out = Vec::new();
        for j in 0u16.. {
            if out.len() >= len {
                break;
            }
            let mut block = x;
            block[14..].copy_from_slice(&j.to_be_bytes());
            let mut block = block.into();
            aes.encrypt_block(&mut block);
            out.extend_from_slice(&block);
        }
        out.truncate(len);
        out
    }

    #[test]
    fn aes256_gcm_key_derivation_matches_independent_aes256_ctr() {
        let profile = SrtpProfile::AeadAes256Gcm;
        let master_key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let master_salt: Vec<u8> = (0..12u8).map(|i| 0xa0 | i).collect();
        let ctx = SrtpContext::new(profile, &master_key, &master_salt).unwrap();
        let SessionKeys::Gcm {
            rtp: rtp_keys,
            rtcp: rtcp_keys,
        } = &ctx.keys
        else {
            panic!("GCM profile without GCM keys")
        };
        assert!(matches!(rtp_keys.aead, GcmAead::Aes256(_)));
        assert!(matches!(rtcp_keys.aead, GcmAead::Aes256(_)));
        let prf = |label, len| independent_aes256_prf(&master_key, &master_salt, label, len);
        assert_eq!(rtp_keys.salt.to_vec(), prf(LABEL_RTP_SALT, 12));
        assert_eq!(rtcp_keys.salt.to_vec(), prf(LABEL_RTCP_SALT, 12));

        // The session encryption keys are not readable; a context keyed with the
        // independently derived keys must produce the same packets.
        let reference = |enc, salt| GcmKeys {
            aead: GcmAead::Aes256(Aes256Gcm::new_from_slice(&prf(enc, 32)).unwrap()),
            salt: prf(salt, 12).try_into().unwrap(),
        };
        let mut expected = SrtpContext {
            profile,
            keys: SessionKeys::Gcm {
                rtp: reference(LABEL_RTP_ENCRYPTION, LABEL_RTP_SALT),
                rtcp: reference(LABEL_RTCP_ENCRYPTION, LABEL_RTCP_SALT),
            },
            ssrcs: SsrcTable::new(),
        };
        let mut derived = ctx;
        let plain = rtp(4321, 0xdead_beef, 77);
        assert_eq!(
            protect(&mut derived, &plain),
            protect(&mut expected, &plain)
        );
        let (mut a, mut b) = (rtcp(0xdead_beef, &[7; 24]), rtcp(0xdead_beef, &[7; 24]));
        derived.protect_rtcp(&mut a).unwrap();
        expected.protect_rtcp(&mut b).unwrap();
        assert_eq!(a, b);

        // The 256-bit session key is a full two blocks of the AES-256 keystream: the second
        // half is not zero and not a copy of the first.
        let key = prf(LABEL_RTP_ENCRYPTION, 32);
        assert_ne!(key[16..], [0; 16]);
        assert_ne!(key[..16], key[16..]);
        // An AES-128 PRF over half the master key gives something else entirely.
        let half = SrtpPrf::new(&master_key[..16]).unwrap();
        let mut other = [0u8; 32];
        let mut padded = [0u8; 14];
        padded[..12].copy_from_slice(&master_salt);
        half.derive(&padded, LABEL_RTP_ENCRYPTION, &mut other);
        assert_ne!(other.to_vec(), key);
    }

    #[test]
    fn aes256_gcm_round_trip_replay_and_tamper() {
        let p = SrtpProfile::AeadAes256Gcm;
        let (mut tx, mut rx) = pair(p);
        // RTP, with and without CSRCs and extension, across a sequence wrap.
        for seq in (65500..=65535u16).chain(0..40) {
            for plain in [rtp(seq, 0x600d, 160), rtp_with_csrc_and_extension(seq)] {
                let wire = protect(&mut tx, &plain);
                assert_eq!(wire.len(), plain.len() + 16);
                assert_eq!(unprotect(&mut rx, &wire).unwrap(), plain);
                assert_eq!(unprotect(&mut rx, &wire), Err(SrtpError::Replay));
            }
        }
        // RTCP.
        for i in 0..20u8 {
            let plain = rtcp(0x600d, &[i; 28]);
            let mut wire = plain.clone();
            tx.protect_rtcp(&mut wire).unwrap();
            assert_eq!(wire.len(), plain.len() + 20);
            let copy = wire.clone();
            let n = rx.unprotect_rtcp(&mut wire).unwrap();
            assert_eq!(wire[..n], plain[..]);
            assert_eq!(rx.unprotect_rtcp(&mut copy.clone()), Err(SrtpError::Replay));
        }
        // Every single-bit flip of an RTP and an RTCP packet is refused, and none moves
        // the replay state: the genuine packets still go through afterwards, once.
        let wire = protect(&mut tx, &rtp(41, 0x600d, 24));
        let mut rtcp_wire = rtcp(0x600d, &[1; 8]);
        tx.protect_rtcp(&mut rtcp_wire).unwrap();
        for at in 0..wire.len() {
            for bit in [0x01, 0x80] {
                let mut bad = wire.clone();
                bad[at] ^= bit;
                assert!(
                    matches!(
                        unprotect(&mut rx, &bad),
                        Err(SrtpError::AuthFailed | SrtpError::BadVersion | SrtpError::Replay)
                    ),
                    "rtp byte {at} bit {bit:#x}"
                );
            }
        }
        for at in 0..rtcp_wire.len() {
            let mut bad = rtcp_wire.clone();
            bad[at] ^= 0x01;
            assert!(
                matches!(
                    rx.unprotect_rtcp(&mut bad),
                    Err(SrtpError::AuthFailed | SrtpError::BadVersion | SrtpError::Replay)
                ),
                "rtcp byte {at}"
            );
        }
        assert_eq!(unprotect(&mut rx, &wire).unwrap(), rtp(41, 0x600d, 24));
        assert_eq!(unprotect(&mut rx, &wire), Err(SrtpError::Replay));
        assert!(rx.unprotect_rtcp(&mut rtcp_wire.clone()).is_ok());
        assert_eq!(
            rx.unprotect_rtcp(&mut rtcp_wire.clone()),
            Err(SrtpError::Replay)
        );

        // Neither 128-bit profile opens 256-bit packets, nor the other way round.
        let (mut tx128, _) = pair(SrtpProfile::AeadAes128Gcm);
        let (_, mut rx256) = pair(p);
        let w128 = protect(&mut tx128, &rtp(7, 1, 30));
        assert_eq!(unprotect(&mut rx256, &w128), Err(SrtpError::AuthFailed));
        let (_, mut rx128) = pair(SrtpProfile::AeadAes128Gcm);
        let w256 = protect(&mut tx, &rtp(7, 1, 30));
        assert_eq!(unprotect(&mut rx128, &w256), Err(SrtpError::AuthFailed));
    }
}
