//! Secrets from the OS CSPRNG (getrandom(2), through ring, the crypto provider rustls
//! already links). Everything a client could use against another client comes from
//! here: ICE credentials, WHIP resource ids, signaling session tokens. The cores never
//! draw randomness themselves: the runtime draws it and passes it in.

use ring::rand::{SecureRandom, SystemRandom};

/// Fill `buf` with random bytes. A process that cannot read the OS generator cannot
/// issue unguessable credentials: it stops rather than issue guessable ones.
pub fn fill(buf: &mut [u8]) {
    if SystemRandom::new().fill(buf).is_err() {
        crate::error!("the OS random number generator failed: stopping rather than issue guessable credentials");
        crate::log::flush();
        std::process::abort();
    }
}

pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    fill(&mut b);
    b
}

pub fn u64() -> u64 {
    u64::from_be_bytes(bytes::<8>())
}

/// 128 random bits as 32 lowercase hex digits.
pub fn hex128() -> String {
    bytes::<16>().iter().map(|b| format!("{b:02x}")).collect()
}
