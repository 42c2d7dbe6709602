//! The TLS record layer of an established connection, in place (RFC 8446 5, RFC 5246 6.2).
//!
//! rustls runs the handshake; once it is complete, [`Records::new`] takes the traffic
//! secrets and sequence numbers rustls hands out for exactly this (its `kernel` API, made
//! for kTLS: "use rustls to establish the connection but something else to do the
//! encryption/decryption after that") and protects records with ring's AEADs itself:
//!
//! - receive: a record is authenticated and decrypted where it lies (in the transport's
//!   receive buffer, or in the connection's record buffer when it spanned two receives),
//!   and the application reads the plaintext there ([`Records::open`]);
//! - transmit: the application's bytes are copied once into the record's place in the
//!   transport's send buffer and encrypted there ([`Records::seal`]): a shared published
//!   frame costs one encryption pass per subscriber and no other copy.
//!
//! What rustls would do after the handshake, this does too: close_notify, alerts,
//! TLS 1.3 KeyUpdate both ways (new secrets from rustls' `KernelConnection`), a key update
//! (TLS 1.3) or a close (TLS 1.2) before a key reaches its suite's confidentiality limit,
//! renegotiation refused with a no_renegotiation warning (TLS 1.2), at most 32 empty or
//! ignored records in a row. Every violation is a fatal alert ([`Alert`]).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};

/// Largest plaintext of one record (RFC 8446 5.1).
pub const MAX_FRAGMENT: usize = 1 << 14;
/// A record's header: type, legacy version, length.
pub const HEADER: usize = 5;
/// AEAD tag.
const TAG: usize = 16;
/// TLS 1.2 AES-GCM's explicit nonce, sent in each record.
const EXPLICIT: usize = 8;
/// Empty, warning or refused records accepted in a row (as rustls).
const IDLE_RECORDS: u8 = 32;

const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;
const KEY_UPDATE: u8 = 24;

/// Alert descriptions (RFC 8446 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alert {
    /// 10: a record or message that must not come now.
    UnexpectedMessage = 10,
    /// 20: a record failed to authenticate.
    BadRecordMac = 20,
    /// 22: a record longer than allowed.
    RecordOverflow = 22,
    /// 47: a field out of range.
    IllegalParameter = 47,
    /// 50: a malformed message.
    DecodeError = 50,
    /// 80: this side cannot go on (key schedule exhausted).
    InternalError = 80,
}

/// Why a connection ends after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The peer broke the protocol: send this alert, then close.
    Send(Alert),
    /// The peer sent a fatal alert (its description): close without one.
    Received(u8),
    /// A TLS 1.2 key reached its limit (TLS 1.2 cannot renew keys): close_notify, close,
    /// as rustls does; the client reconnects.
    Exhausted,
}

/// What one received record held.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data at this range of the record (possibly empty).
    Data(std::ops::Range<usize>),
    /// close_notify: the peer sends no more.
    Closed,
    /// Handled here (a key update, a warning): nothing for the application.
    Nothing,
    /// TLS 1.2 renegotiation: refused with a no_renegotiation warning
    /// ([`Records::no_renegotiation`]), the connection goes on (as rustls).
    Renegotiation,
}

/// One direction's key.
struct Key {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Key {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Key, Alert> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(Alert::InternalError),
        };
        let key = UnboundKey::new(alg, key.as_ref()).map_err(|_| Alert::InternalError)?;
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| Alert::InternalError)?;
        Ok(Key {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The per-record nonce: the IV with the sequence number XORed into its last 8 bytes
    /// (RFC 8446 5.3; RFC 5288's TLS 1.2 GCM nonce built the same way, as rustls does).
    fn nonce(&self) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n.iter_mut().skip(4).zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }
}

/// The record protection of one established connection (see the module docs).
pub struct Records {
    kernel: KernelConnection<ServerConnectionData>,
    tls13: bool,
    /// TLS 1.2 AES-GCM: an explicit nonce in every record.
    explicit: bool,
    tx: Key,
    rx: Key,
    /// Records one key may protect (the suite's confidentiality limit, with a margin).
    limit: u64,
    /// The peer asked for our key update (TLS 1.3): sent before the next record.
    update_asked: bool,
    /// A TLS 1.3 handshake message split over records (a KeyUpdate is 5 bytes).
    handshake: Vec<u8>,
    /// Empty or ignored records in a row.
    idle: u8,
    /// Keys renewed so far: received, sent.
    renewed: (u32, u32),
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("tls13", &self.tls13)
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .field("key_updates", &self.renewed)
            .finish_non_exhaustive()
    }
}

impl Records {
    /// The record layer for the secrets rustls handed over at the end of the handshake.
    pub fn new(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
    ) -> Result<Records, Alert> {
        let suite = kernel.negotiated_cipher_suite();
        let limit = match suite {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        let tls13 = kernel.protocol_version() == ProtocolVersion::TLSv1_3;
        let explicit = !tls13
            && matches!(
                secrets.tx.1,
                ConnectionTrafficSecrets::Aes128Gcm { .. }
                    | ConnectionTrafficSecrets::Aes256Gcm { .. }
            );
        Ok(Records {
            tls13,
            explicit,
            tx: Key::new(secrets.tx.0, secrets.tx.1)?,
            rx: Key::new(secrets.rx.0, secrets.rx.1)?,
            // Renew (or close) well before the limit, like rustls' soft limit.
            limit: limit.saturating_sub(limit / 16),
            kernel,
            update_asked: false,
            handshake: Vec::new(),
            idle: 0,
            renewed: (0, 0),
        })
    }

    /// A key renews (or the connection closes) after `records` records (tests).
    #[cfg(test)]
    pub fn set_limit_for_test(&mut self, records: u64) {
        self.limit = records;
    }

    /// Keys renewed so far (TLS 1.3 KeyUpdate): the peer's, ours.
    #[cfg(test)]
    pub fn key_updates(&self) -> (u32, u32) {
        self.renewed
    }

    /// Bytes before a record's plaintext (header, and TLS 1.2 GCM's explicit nonce).
    pub fn prefix(&self) -> usize {
        if self.explicit {
            HEADER + EXPLICIT
        } else {
            HEADER
        }
    }

    /// Bytes after a record's plaintext (TLS 1.3's content type, the tag).
    pub fn suffix(&self) -> usize {
        if self.tls13 {
            1 + TAG
        } else {
            TAG
        }
    }

    /// Bytes a record adds to its plaintext.
    pub fn overhead(&self) -> usize {
        self.prefix() + self.suffix()
    }

    /// Before sealing application data: the records this key may still protect are used
    /// up, or the peer asked for a key update. TLS 1.3 needs a KeyUpdate message sent
    /// first ([`Records::key_update`]); TLS 1.2 cannot renew and must close.
    pub fn needs_key_update(&self) -> Result<bool, Fault> {
        if self.tx.seq < self.limit {
            return Ok(self.update_asked);
        }
        if self.tls13 {
            Ok(true)
        } else {
            Err(Fault::Exhausted)
        }
    }

    /// Seals our KeyUpdate (update_not_requested) into `buf` and switches to the next
    /// sending key; returns the record's length (`buf` must hold [`Records::overhead`] + 5).
    pub fn key_update(&mut self, buf: &mut [u8]) -> Result<usize, Alert> {
        let p = self.prefix();
        let msg = [KEY_UPDATE, 0, 0, 1, 0];
        buf.get_mut(p..p + msg.len())
            .ok_or(Alert::InternalError)?
            .copy_from_slice(&msg);
        let n = self.seal(HANDSHAKE, buf, msg.len())?;
        let (seq, secrets) = self
            .kernel
            .update_tx_secret()
            .map_err(|_| Alert::InternalError)?;
        self.tx = Key::new(seq, secrets)?;
        self.update_asked = false;
        self.renewed.1 += 1;
        Ok(n)
    }

    /// Seals a record of `typ` in place: `buf` holds the plaintext at
    /// `prefix()..prefix() + len` and room for `suffix()` after it; writes the header,
    /// the nonce and the tag around it. Returns the record's length.
    pub fn seal(&mut self, typ: u8, buf: &mut [u8], len: usize) -> Result<usize, Alert> {
        if len > MAX_FRAGMENT {
            return Err(Alert::InternalError);
        }
        let p = self.prefix();
        let total = p + len + self.suffix();
        let rec = buf.get_mut(..total).ok_or(Alert::InternalError)?;
        let nonce = self.tx.nonce();
        let (outer, mut body_len) = if self.tls13 {
            if let Some(t) = rec.get_mut(p + len) {
                *t = typ;
            }
            (APPLICATION_DATA, len + 1)
        } else {
            (typ, len)
        };
        let length = u16::try_from(total - HEADER).map_err(|_| Alert::InternalError)?;
        let [l0, l1] = length.to_be_bytes();
        let header = [outer, 3, 3, l0, l1];
        if let Some(h) = rec.get_mut(..HEADER) {
            h.copy_from_slice(&header);
        }
        if self.explicit {
            if let (Some(e), Some(n)) = (rec.get_mut(HEADER..p), nonce.get(4..)) {
                e.copy_from_slice(n);
            }
        }
        let aad = self.aad(&header, self.tx.seq, typ, len);
        let body = rec.get_mut(p..).ok_or(Alert::InternalError)?;
        let (plain, tag_at) = body.split_at_mut(body_len);
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.0.get(..aad.1).unwrap_or_default()),
                plain,
            )
            .map_err(|_| Alert::InternalError)?;
        tag_at
            .get_mut(..TAG)
            .ok_or(Alert::InternalError)?
            .copy_from_slice(tag.as_ref());
        body_len += TAG;
        debug_assert_eq!(p + body_len, total);
        self.tx.seq += 1;
        Ok(total)
    }

    /// Seals a fatal alert into `buf` (room for [`Records::overhead`] + 2); its length.
    pub fn alert(&mut self, alert: Alert, buf: &mut [u8]) -> Result<usize, Alert> {
        self.seal_alert(2, alert as u8, buf)
    }

    /// Seals a close_notify into `buf` (room for [`Records::overhead`] + 2); its length.
    pub fn close_notify(&mut self, buf: &mut [u8]) -> Result<usize, Alert> {
        self.seal_alert(1, 0, buf)
    }

    /// Seals a no_renegotiation warning into `buf` (room for [`Records::overhead`] + 2).
    pub fn no_renegotiation(&mut self, buf: &mut [u8]) -> Result<usize, Alert> {
        self.seal_alert(1, 100, buf)
    }

    fn seal_alert(&mut self, level: u8, desc: u8, buf: &mut [u8]) -> Result<usize, Alert> {
        let p = self.prefix();
        buf.get_mut(p..p + 2)
            .ok_or(Alert::InternalError)?
            .copy_from_slice(&[level, desc]);
        self.seal(ALERT, buf, 2)
    }

    /// The length of the record at the start of `buf` once its header is there: Err for
    /// a header no record of this connection may have.
    pub fn record_len(&self, buf: &[u8]) -> Option<Result<usize, Alert>> {
        let h = buf.get(..HEADER)?;
        let (typ, major, len) = (
            h.first().copied().unwrap_or(0),
            h.get(1).copied().unwrap_or(0),
            usize::from(u16::from_be_bytes([
                h.get(3).copied().unwrap_or(0),
                h.get(4).copied().unwrap_or(0),
            ])),
        );
        let max = if self.tls13 {
            MAX_FRAGMENT + 256
        } else {
            MAX_FRAGMENT + 2048
        };
        Some(if major != 3 {
            Err(Alert::DecodeError)
        } else if len > max {
            Err(Alert::RecordOverflow)
        } else if !matches!(typ, ALERT | HANDSHAKE | APPLICATION_DATA)
            || (self.tls13 && typ != APPLICATION_DATA)
        {
            // RFC 8446 5: after the handshake every record is application_data, and a
            // change_cipher_spec is an unexpected_message; TLS 1.2 has none either.
            Err(Alert::UnexpectedMessage)
        } else {
            Ok(HEADER + len)
        })
    }

    /// Authenticates and decrypts the whole record `rec` (as [`Records::record_len`]
    /// measured it) in place and acts on what is not application data.
    ///
    /// A TLS 1.3 KeyUpdate asking for ours makes [`Records::needs_key_update`] true.
    pub fn open(&mut self, rec: &mut [u8]) -> Result<Opened, Fault> {
        let typ = rec.first().copied().unwrap_or(0);
        let p = self.prefix();
        if rec.len() < p + self.suffix() {
            return Err(Fault::Send(Alert::BadRecordMac));
        }
        let nonce = if self.explicit {
            let mut n = self.rx.iv;
            if let (Some(to), Some(from)) = (n.get_mut(4..), rec.get(HEADER..p)) {
                to.copy_from_slice(from);
            }
            n
        } else {
            self.rx.nonce()
        };
        let cipher_len = rec.len() - p;
        let aad = self.aad(
            rec.get(..HEADER).unwrap_or_default(),
            self.rx.seq,
            typ,
            cipher_len - TAG,
        );
        let body = rec.get_mut(p..).ok_or(Fault::Send(Alert::BadRecordMac))?;
        let plain_len = self
            .rx
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.0.get(..aad.1).unwrap_or_default()),
                body,
            )
            .map_err(|_| Fault::Send(Alert::BadRecordMac))?
            .len();
        self.rx.seq += 1;
        let body = rec.get(p..p + plain_len).unwrap_or_default();
        let (typ, len) = if self.tls13 {
            // Content, its type, zero padding (RFC 8446 5.2).
            match body.iter().rposition(|&b| b != 0) {
                Some(i) => (body.get(i).copied().unwrap_or(0), i),
                None => return Err(Fault::Send(Alert::UnexpectedMessage)),
            }
        } else {
            (typ, plain_len)
        };
        if len > MAX_FRAGMENT {
            return Err(Fault::Send(Alert::RecordOverflow));
        }
        match typ {
            APPLICATION_DATA if !self.handshake.is_empty() => {
                // RFC 8446 5.1: handshake fragments may not be interleaved.
                Err(Fault::Send(Alert::UnexpectedMessage))
            }
            APPLICATION_DATA => {
                if len == 0 {
                    self.idle()?;
                } else {
                    self.idle = 0;
                }
                Ok(Opened::Data(p..p + len))
            }
            ALERT => {
                let content = rec.get(p..p + len).unwrap_or_default();
                let &[level, desc] = content else {
                    return Err(Fault::Send(Alert::DecodeError));
                };
                match desc {
                    0 => Ok(Opened::Closed),
                    // user_canceled (TLS 1.3 6.1), or any warning in TLS 1.2.
                    90 if self.tls13 => self.idle().map(|()| Opened::Nothing),
                    _ if !self.tls13 && level == 1 => self.idle().map(|()| Opened::Nothing),
                    _ => Err(Fault::Received(desc)),
                }
            }
            HANDSHAKE if self.tls13 => {
                let content = rec.get(p..p + len).unwrap_or_default().to_vec();
                self.on_handshake(&content)
            }
            HANDSHAKE => {
                // TLS 1.2 renegotiation (a ClientHello).
                self.idle()?;
                Ok(Opened::Renegotiation)
            }
            _ => Err(Fault::Send(Alert::UnexpectedMessage)),
        }
    }

    fn idle(&mut self) -> Result<(), Fault> {
        self.idle += 1;
        if self.idle > IDLE_RECORDS {
            Err(Fault::Send(Alert::UnexpectedMessage))
        } else {
            Ok(())
        }
    }

    /// TLS 1.3 post-handshake messages: only KeyUpdate is acceptable from a client that
    /// did not offer post-handshake authentication (RFC 8446 4.6).
    fn on_handshake(&mut self, content: &[u8]) -> Result<Opened, Fault> {
        if content.is_empty() {
            return Err(Fault::Send(Alert::UnexpectedMessage));
        }
        self.handshake.extend_from_slice(content);
        if let Some(&[typ, a, b, c]) = self.handshake.get(..4) {
            if typ != KEY_UPDATE {
                return Err(Fault::Send(Alert::UnexpectedMessage));
            }
            if u32::from_be_bytes([0, a, b, c]) != 1 {
                return Err(Fault::Send(Alert::DecodeError));
            }
        }
        let asked = match self.handshake.as_slice() {
            // Not whole yet (a fragment): the rest comes in the next handshake record.
            h if h.len() < 5 => return Ok(Opened::Nothing),
            &[_, _, _, _, asked] => asked,
            // RFC 8446 5.1: no message after a KeyUpdate in the same record.
            _ => return Err(Fault::Send(Alert::UnexpectedMessage)),
        };
        self.handshake.clear();
        match asked {
            0 => {}
            1 => self.update_asked = true,
            _ => return Err(Fault::Send(Alert::IllegalParameter)),
        }
        let (seq, secrets) = self
            .kernel
            .update_rx_secret()
            .map_err(|_| Fault::Send(Alert::InternalError))?;
        self.rx = Key::new(seq, secrets).map_err(Fault::Send)?;
        self.renewed.0 += 1;
        Ok(Opened::Nothing)
    }
}

impl Records {
    /// A record's additional data, and how many of the 13 bytes it is: TLS 1.3 its
    /// header (RFC 8446 5.2); TLS 1.2 the sequence number, type, version and plaintext
    /// length `len` (RFC 5246 6.2.3.3).
    fn aad(&self, header: &[u8], seq: u64, typ: u8, len: usize) -> ([u8; 13], usize) {
        if self.tls13 {
            let mut a = [0u8; 13];
            if let (Some(to), Some(from)) = (a.get_mut(..HEADER), header.get(..HEADER)) {
                to.copy_from_slice(from);
            }
            (a, HEADER)
        } else {
            (tls12_aad(seq, typ, len), 13)
        }
    }
}

/// RFC 5246 6.2.3.3: seq_num, type, version, length.
fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    if let Some(s) = a.get_mut(..8) {
        s.copy_from_slice(&seq.to_be_bytes());
    }
    let [l0, l1] = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(t) = a.get_mut(8..) {
        t.copy_from_slice(&[typ, 3, 3, l0, l1]);
    }
    a
}
