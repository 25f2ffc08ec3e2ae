//! The transport half every WebRTC session shares, publisher or viewer:
//! ICE-lite (RFC 8445 §2.5), DTLS-SRTP (RFC 5764) as the DTLS server, the
//! SRTP contexts both ways, the nominated remote address, the connect timeout
//! and the queue of datagrams to send.
//!
//! Sans-IO like the sessions that hold it: the session hands it each datagram
//! (`handle_datagram`), which answers STUN and DTLS itself and gives back the
//! SRTP and SRTCP for the session to read; `handle_timeout` runs the ICE and
//! DTLS timers and the connect limit. What happened comes out as
//! [`TransportEvent`]s, in order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::webrtc::{RtcDrop, RtcError};
use crate::proto::dtls::{DtlsEvent, DtlsIdentity, DtlsServer, SrtpKeys, SrtpSuite};
use crate::proto::ice::{IceAnswer, IceEvent, IceLite};
use crate::proto::srtp::{SrtpContext, SrtpProfile};
use crate::proto::{rtp, stun};

/// ICE must nominate and DTLS must finish within this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub enum TransportEvent {
    /// ICE nominated and DTLS-SRTP up (once).
    Connected,
    /// The transport failed or the peer closed it (once); nothing more will come.
    Ended(RtcError),
}

/// What a datagram was, once the transport has looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demuxed {
    /// STUN or DTLS: handled here.
    Handled,
    /// SRTP from the validated peer: the session unprotects and reads it.
    Rtp,
    /// SRTCP from the validated peer.
    Rtcp,
}

pub struct RtcTransport {
    ice: IceLite,
    dtls: DtlsServer,
    pub srtp_in: Option<SrtpContext>,
    pub srtp_out: Option<SrtpContext>,
    remote: Option<SocketAddr>,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
    max_transmit: usize,
    created: Instant,
    connected: Option<Instant>,
    failed: bool,
    events: VecDeque<TransportEvent>,
    /// For log lines: the stream's name.
    label: std::sync::Arc<str>,
}

/// The ICE credentials of both sides, and the DTLS fingerprint the peer's
/// certificate must match (from its SDP).
pub struct TransportParams {
    pub local_ufrag: String,
    pub local_pwd: String,
    pub remote_ufrag: String,
    pub remote_pwd: String,
    pub remote_fingerprint: Vec<u8>,
}

impl RtcTransport {
    pub fn new(label: std::sync::Arc<str>, p: TransportParams, identity: &DtlsIdentity, max_transmit: usize, now: Instant) -> Self {
        RtcTransport {
            ice: IceLite::new(p.local_ufrag, p.local_pwd, Some(p.remote_ufrag), Some(p.remote_pwd), now),
            dtls: DtlsServer::new(identity, p.remote_fingerprint, now),
            srtp_in: None,
            srtp_out: None,
            remote: None,
            transmit: VecDeque::new(),
            max_transmit,
            created: now,
            connected: None,
            failed: false,
            events: VecDeque::new(),
            label,
        }
    }

    pub fn local_ufrag(&self) -> &str {
        self.ice.local_ufrag()
    }
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }
    pub fn connected(&self) -> Option<Instant> {
        self.connected
    }
    pub fn created(&self) -> Instant {
        self.created
    }
    pub fn is_failed(&self) -> bool {
        self.failed
    }
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmit.pop_front()
    }
    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        self.events.pop_front()
    }
    /// Datagrams queued and not yet taken by the shell.
    pub fn queued(&self) -> usize {
        self.transmit.len()
    }

    /// Queue a datagram (dropped past the queue's bound: UDP may lose it anyway).
    pub fn send(&mut self, to: SocketAddr, d: Vec<u8>) -> bool {
        if self.transmit.len() < self.max_transmit {
            self.transmit.push_back((to, d));
            true
        } else {
            false
        }
    }

    /// Tests of the sessions above: ICE and DTLS "done" with the given SRTP contexts
    /// (the peer holds the mirror ones), `remote` nominated.
    #[cfg(test)]
    pub(crate) fn connect_for_test(&mut self, now: Instant, remote: SocketAddr, srtp_out: SrtpContext, srtp_in: SrtpContext) {
        self.remote = Some(remote);
        self.srtp_out = Some(srtp_out);
        self.srtp_in = Some(srtp_in);
        self.connected = Some(now);
        self.events.push_back(TransportEvent::Connected);
    }

    /// End the transport with `why` (the first reason wins).
    pub fn fail(&mut self, why: RtcError) {
        if !self.failed {
            self.failed = true;
            self.events.push_back(TransportEvent::Ended(why));
        }
    }

    /// Protect and queue an RTCP compound packet to the nominated peer.
    pub fn send_rtcp(&mut self, mut p: Vec<u8>) -> bool {
        let (Some(ctx), Some(to)) = (self.srtp_out.as_mut(), self.remote) else { return false };
        if ctx.protect_rtcp(&mut p).is_err() {
            return false;
        }
        self.send(to, p)
    }

    /// Protect and queue an RTP packet to the nominated peer.
    pub fn send_rtp(&mut self, mut p: Vec<u8>) -> bool {
        let (Some(ctx), Some(to)) = (self.srtp_out.as_mut(), self.remote) else { return false };
        if ctx.protect_rtp(&mut p).is_err() {
            return false;
        }
        self.send(to, p)
    }

    /// One datagram (RFC 7983 §7 demultiplexing on the first byte). STUN and DTLS are
    /// handled here; SRTP/SRTCP from a validated source go back to the session.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Result<Demuxed, RtcDrop> {
        if self.failed {
            return Err(RtcDrop::SessionEnded);
        }
        match d.first().copied() {
            Some(0..=3) => {
                let msg = stun::parse(d).map_err(|_| RtcDrop::StunMalformed)?;
                let mut out = Vec::new();
                // `Err` only once the agent has ended, and then the session has too.
                let answer = self.ice.handle_stun(now, from, &msg, &mut out).map_err(|_| RtcDrop::SessionEnded)?;
                if !out.is_empty() {
                    self.send(from, out);
                }
                self.drain_ice();
                match answer {
                    IceAnswer::Dropped(why) => Err(why.into()),
                    IceAnswer::Respond | IceAnswer::Nominated { .. } | IceAnswer::Rejected { .. } => Ok(Demuxed::Handled),
                }
            }
            Some(20..=63) => {
                if !self.ice.is_valid_remote(from) {
                    return Err(RtcDrop::UnvalidatedSource);
                }
                if let Err(e) = self.dtls.handle_datagram(d) {
                    crate::info!("webrtc {from}: {e}");
                    self.fail(if matches!(e, crate::proto::dtls::DtlsError::FingerprintMismatch) {
                        RtcError::DtlsFingerprint
                    } else {
                        RtcError::DtlsFailed
                    });
                    return Ok(Demuxed::Handled);
                }
                self.drain_dtls(now, from);
                Ok(Demuxed::Handled)
            }
            Some(128..=191) => {
                if Some(from) != self.remote && !self.ice.is_valid_remote(from) {
                    return Err(RtcDrop::UnvalidatedSource);
                }
                Ok(if rtp::is_rtcp(d) { Demuxed::Rtcp } else { Demuxed::Rtp })
            }
            _ => Err(RtcDrop::NotDemuxed),
        }
    }

    fn drain_ice(&mut self) {
        while let Some(ev) = self.ice.poll_event() {
            match ev {
                IceEvent::Nominated { remote } => self.remote = Some(remote),
                IceEvent::Disconnected => self.fail(RtcError::IceConsentLost),
                IceEvent::Failed => self.fail(RtcError::IceTimeout),
            }
        }
    }

    fn drain_dtls(&mut self, now: Instant, to: SocketAddr) {
        while let Some(p) = self.dtls.poll_transmit() {
            self.send(to, p);
        }
        while let Some(ev) = self.dtls.poll_event() {
            match ev {
                DtlsEvent::Connected(keys) => match srtp_contexts(&keys) {
                    Ok((i, o)) => {
                        self.srtp_in = Some(i);
                        self.srtp_out = Some(o);
                        if self.connected.is_none() {
                            self.connected = Some(now);
                            self.events.push_back(TransportEvent::Connected);
                        }
                    }
                    Err(e) => {
                        crate::info!("webrtc {to}: SRTP setup failed: {e}");
                        self.fail(RtcError::DtlsFailed);
                    }
                },
                DtlsEvent::Closed => self.fail(RtcError::PeerClosed),
            }
        }
    }

    /// The earliest of the ICE agent's, the DTLS retransmit and (before DTLS is up)
    /// the connect limit. `None` once failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        let mut at = Earliest::default();
        at.add(self.ice.poll_timeout());
        at.add(self.dtls.poll_timeout());
        if self.connected.is_none() {
            at.add(self.created.checked_add(CONNECT_TIMEOUT));
        }
        at.0
    }

    /// ICE and DTLS timers, and the connect limit.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        self.ice.handle_timeout(now);
        self.drain_ice();
        if let Err(e) = self.dtls.handle_timeout(now) {
            crate::info!("webrtc {:?}: {e}", self.label);
            self.fail(RtcError::DtlsFailed);
            return;
        }
        if let Some(to) = self.remote {
            self.drain_dtls(now, to);
        }
        if self.connected.is_none() && !self.failed && now.saturating_duration_since(self.created) >= CONNECT_TIMEOUT {
            self.fail(if self.remote.is_some() { RtcError::DtlsFailed } else { RtcError::IceTimeout });
        }
    }
}

/// The earliest of some optional deadlines.
#[derive(Default)]
pub struct Earliest(pub Option<Instant>);

impl Earliest {
    pub fn add(&mut self, t: Option<Instant>) {
        if let Some(t) = t {
            self.0 = Some(self.0.map_or(t, |c| c.min(t)));
        }
    }
}

fn srtp_contexts(keys: &SrtpKeys) -> Result<(SrtpContext, SrtpContext), String> {
    let profile = match keys.suite {
        SrtpSuite::Aes128CmSha1_80 => SrtpProfile::Aes128CmSha1_80,
        SrtpSuite::AeadAes128Gcm => SrtpProfile::AeadAes128Gcm,
        SrtpSuite::AeadAes256Gcm => SrtpProfile::AeadAes256Gcm,
    };
    let i = SrtpContext::new(profile, &keys.remote_key, &keys.remote_salt).map_err(|e| e.to_string())?;
    let o = SrtpContext::new(profile, &keys.local_key, &keys.local_salt).map_err(|e| e.to_string())?;
    Ok((i, o))
}
