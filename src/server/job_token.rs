//! Job tokens: what a job's own command presents for calls about itself
//! (its test queue), never the worker's token. A token names the job and
//! the attempt it was made for and is signed with a key kept in the
//! database (HMAC-SHA-256), so every server on that database checks it
//! without storing tokens; it is good only while that attempt is current,
//! which the store checks on each call.

use sha2::{Digest, Sha256};

/// Tokens start so, for a reader to tell them from worker and client ones.
const PREFIX: &str = "tbj1";

pub struct JobTokens {
    key: Vec<u8>,
}

impl JobTokens {
    pub fn new(key: &[u8]) -> JobTokens {
        JobTokens { key: key.to_vec() }
    }

    /// A fresh random key, hex: the database keeps the first one made.
    pub fn fresh_key() -> anyhow::Result<String> {
        random_hex(32)
            .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom for the job token key: {e}"))
    }

    fn mac(&self, job: i64, attempt: u32) -> [u8; 32] {
        hmac_sha256(
            &self.key,
            format!("testbot job {job} attempt {attempt}").as_bytes(),
        )
    }

    pub fn mint(&self, job: i64, attempt: u32) -> String {
        format!(
            "{PREFIX}.{job}.{attempt}.{}",
            super::auth::hex(&self.mac(job, attempt))
        )
    }

    /// The job and attempt a genuine token was made for.
    pub fn check(&self, token: &str) -> Option<(i64, u32)> {
        let mut parts = token.trim().split('.');
        if parts.next()? != PREFIX {
            return None;
        }
        let job: i64 = parts.next()?.parse().ok()?;
        let attempt: u32 = parts.next()?.parse().ok()?;
        let mac = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let want = super::auth::hex(&self.mac(job, attempt));
        super::auth::ct_eq(want.as_bytes(), mac.as_bytes()).then_some((job, attempt))
    }
}

/// HMAC (RFC 2104) over SHA-256.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `n` fresh random bytes from the kernel, as hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            crate::server::auth::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            crate::server::auth::hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_token_is_good_for_its_job_and_attempt_only() {
        let t = JobTokens::new(b"key");
        let tok = t.mint(17, 2);
        assert_eq!(t.check(&tok), Some((17, 2)));
        assert_eq!(t.check(&tok.replace(".17.", ".18.")), None);
        assert_eq!(t.check(&tok.replace(".2.", ".3.")), None);
        assert_eq!(JobTokens::new(b"other").check(&tok), None);
        assert_eq!(t.check(&format!("{tok}.x")), None);
        assert_eq!(t.check("tbj1.17.2"), None);
        assert_eq!(t.check(""), None);
    }
}
