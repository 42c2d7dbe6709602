//! Payload masking (RFC 6455 5.3): XOR with a repeating 4-byte key, done in place.
//!
//! [`apply_mask`] is the fast path (a `u64` at a time, safe code); [`apply_mask_scalar`] is the
//! byte-at-a-time oracle it is checked against at every alignment and key phase.
//! [`mask_copy_blocks`] and [`mask_copy_pairs`] unmask while copying, one SSE2 XOR per
//! 16-byte block (the `wide` crate's safe vector types), one or two blocks a step.

/// XORs `buf` in place with `key`, starting at byte `phase` (0..=3) of the key.
///
/// Returns the key phase for the byte after `buf`, so a payload split across several
/// slices can be unmasked piece by piece. The byte-at-a-time reference implementation.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let mut p = phase & 3;
    for b in buf.iter_mut() {
        *b ^= key[p];
        p = (p + 1) & 3;
    }
    p
}

/// XORs `buf` in place with `key`, starting at byte `phase` (0..=3) of the key.
///
/// Same contract as [`apply_mask_scalar`], sixteen bytes at a time (one `u128` XOR,
/// which the compiler may keep in a vector register), then eight, then byte by byte.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], phase: usize) -> usize {
    let phase = phase & 3;
    // RFC 6455 5.3: octet i of the payload is XORed with octet (i MOD 4) of the key.
    let rotated = [
        key[phase],
        key[(phase + 1) & 3],
        key[(phase + 2) & 3],
        key[(phase + 3) & 3],
    ];
    let key4 = u32::from_ne_bytes(rotated);
    let key8 = u64::from(key4) | (u64::from(key4) << 32);
    let key16 = u128::from(key8) | (u128::from(key8) << 64);
    let mut chunks = buf.chunks_exact_mut(16);
    for chunk in &mut chunks {
        if let Ok(block) = <&mut [u8; 16]>::try_from(chunk) {
            *block = (u128::from_ne_bytes(*block) ^ key16).to_ne_bytes();
        }
    }
    let rest = chunks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for chunk in &mut words {
        if let Ok(word) = <&mut [u8; 8]>::try_from(chunk) {
            *word = (u64::from_ne_bytes(*word) ^ key8).to_ne_bytes();
        }
    }
    let rest = words.into_remainder();
    // Whole 8- and 16-byte chunks keep the phase; only the tail advances it.
    apply_mask_scalar(rest, rotated, 0);
    (phase + rest.len()) & 3
}

/// Writes `src` XORed with `key` (from phase 0) into `dst`, sixteen bytes at a time: the
/// unmasking copy of [`crate::Connection::reflect_small`]. Covers the whole 16-byte blocks
/// common to both slices; callers round a payload up to a block and ignore the excess.
#[inline]
pub fn mask_copy_blocks(dst: &mut [u8], src: &[u8], key: [u8; 4]) {
    let key16 = wide::u32x4::splat(u32::from_ne_bytes(key));
    let (dst, _) = dst.as_chunks_mut::<16>();
    let (src, _) = src.as_chunks::<16>();
    for (d, s) in dst.iter_mut().zip(src) {
        let block: wide::u32x4 = bytemuck::cast(*s);
        *d = bytemuck::cast(block ^ key16);
    }
}

/// [`mask_copy_blocks`] 32 bytes a step (two vector XORs per loop test): the whole
/// 32-byte pairs common to both slices.
#[inline]
pub fn mask_copy_pairs(dst: &mut [u8], src: &[u8], key: [u8; 4]) {
    let key16 = wide::u32x4::splat(u32::from_ne_bytes(key));
    let (dst, _) = dst.as_chunks_mut::<32>();
    let (src, _) = src.as_chunks::<32>();
    for (d, s) in dst.iter_mut().zip(src) {
        let [a, b]: [wide::u32x4; 2] = bytemuck::cast(*s);
        *d = bytemuck::cast([a ^ key16, b ^ key16]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mask_twice_identity() {
        let mut data: Vec<u8> = (0..100u8).collect();
        let orig = data.clone();
        apply_mask(&mut data, [1, 2, 3, 4], 0);
        assert_ne!(data, orig);
        apply_mask(&mut data, [1, 2, 3, 4], 0);
        assert_eq!(data, orig);
    }

    #[test]
    fn mask_rfc_example_hello_unmasked() {
        // RFC 6455 5.7: a masked "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    proptest! {
        #[test]
        fn mask_fast_equals_scalar_every_alignment(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            key in any::<[u8; 4]>(),
            start in 0usize..16,
            phase in 0usize..4,
            split in 0usize..300,
        ) {
            let start = start.min(data.len());
            let mut fast = data.clone();
            let mut slow = data.clone();
            // Offsetting the slice start exercises every address alignment.
            let pf = apply_mask(&mut fast[start..], key, phase);
            let ps = apply_mask_scalar(&mut slow[start..], key, phase);
            prop_assert_eq!(&fast, &slow);
            prop_assert_eq!(pf, ps);
            // Piecewise unmasking with the returned phase equals one pass.
            let mut pieces = data.clone();
            let split = split.min(pieces.len());
            let (a, b) = pieces.split_at_mut(split);
            let p = apply_mask(a, key, phase);
            apply_mask(b, key, p);
            let mut whole = data;
            apply_mask_scalar(&mut whole, key, phase);
            prop_assert_eq!(pieces, whole);
        }

        #[test]
        fn mask_copy_blocks_and_pairs_equal_copy_then_scalar(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            key in any::<[u8; 4]>(),
            start in 0usize..16,
            extra in 0usize..40,
        ) {
            let start = start.min(data.len());
            let src = &data[start..];
            // The output may be longer than the input: only whole common blocks are written.
            let mut dst = vec![0x5au8; src.len() + extra];
            mask_copy_blocks(&mut dst, src, key);
            let blocks = src.len() / 16 * 16;
            let mut want = src[..blocks].to_vec();
            apply_mask_scalar(&mut want, key, 0);
            prop_assert_eq!(&dst[..blocks], &want[..]);
            prop_assert!(dst[blocks..].iter().all(|&b| b == 0x5a));
            // Two blocks a step: the whole pairs only.
            let mut dst = vec![0x5au8; src.len() + extra];
            mask_copy_pairs(&mut dst, src, key);
            let pairs = src.len() / 32 * 32;
            prop_assert_eq!(&dst[..pairs], &want[..pairs]);
            prop_assert!(dst[pairs..].iter().all(|&b| b == 0x5a));
        }
    }
}
