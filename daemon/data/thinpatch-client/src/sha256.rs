//! SHA-256 (FIPS 180-4), streaming: a remote patch is hashed chunk by chunk as it is written,
//! then compared with the `sha256` the daemon sent.

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

pub(crate) struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    filled: usize,
    length: u64,
}

impl Sha256 {
    pub fn new() -> Sha256 {
        Sha256 {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
            ],
            block: [0; 64],
            filled: 0,
            length: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.length = self.length.wrapping_add(data.len() as u64);
        if self.filled > 0 {
            let take = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 64 {
                return;
            }
            let block = self.block;
            self.compress(&block);
            self.filled = 0;
        }
        // Whole blocks straight from the input, without copying them first.
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            self.compress(block.try_into().expect("64 bytes"));
        }
        let rest = blocks.remainder();
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    /// The digest as 64 lowercase hex characters, as the wire carries it.
    pub fn finish_hex(mut self) -> String {
        let bit_length = self.length.wrapping_mul(8);
        self.update(&[0x80]);
        while self.filled != 56 {
            self.update(&[0]);
        }
        self.update(&bit_length.to_be_bytes());
        self.state.iter().map(|word| format!("{word:08x}")).collect()
    }

    /// Written with plain operators on u64 (no method calls, few bounds checks): a debug build
    /// of the program compiles this crate unoptimised, and hashes a patch of several MiB.
    fn compress(&mut self, block: &[u8; 64]) {
        const M: u64 = 0xFFFF_FFFF;
        let mut w = [0u64; 64];
        let mut i = 0;
        while i < 16 {
            w[i] = (block[4 * i] as u64) << 24 | (block[4 * i + 1] as u64) << 16 | (block[4 * i + 2] as u64) << 8 | block[4 * i + 3] as u64;
            i += 1;
        }
        // Rotations of 32-bit values held in u64s.
        macro_rules! rotr {
            ($x:expr, $n:literal) => {
                (($x >> $n) | ($x << (32 - $n))) & M
            };
        }
        while i < 64 {
            let (a, b) = (w[i - 15], w[i - 2]);
            let s0 = rotr!(a, 7) ^ rotr!(a, 18) ^ (a >> 3);
            let s1 = rotr!(b, 17) ^ rotr!(b, 19) ^ (b >> 10);
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & M;
            i += 1;
        }
        let s = &self.state;
        let (mut a, mut b, mut c, mut d) = (s[0] as u64, s[1] as u64, s[2] as u64, s[3] as u64);
        let (mut e, mut f, mut g, mut h) = (s[4] as u64, s[5] as u64, s[6] as u64, s[7] as u64);
        i = 0;
        while i < 64 {
            let s1 = rotr!(e, 6) ^ rotr!(e, 11) ^ rotr!(e, 25);
            let choice = (e & f) ^ (!e & g & M);
            let t1 = h + s1 + choice + K[i] as u64 + w[i];
            let s0 = rotr!(a, 2) ^ rotr!(a, 13) ^ rotr!(a, 22);
            let majority = (a & b) ^ (a & c) ^ (b & c);
            h = g;
            g = f;
            f = e;
            e = (d + t1) & M;
            d = c;
            c = b;
            b = a;
            a = (t1 + s0 + majority) & M;
            i += 1;
        }
        for (slot, value) in self.state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *slot = ((*slot as u64 + value) & M) as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(data: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(data);
        hasher.finish_hex()
    }

    #[test]
    fn matches_the_fips_180_vectors() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(sha256_hex(&vec![b'a'; 1_000_000]), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        assert_eq!(sha256_hex(&[b'x'; 55]), "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072");
        assert_eq!(sha256_hex(&[b'x'; 56]), "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e");
        assert_eq!(sha256_hex(&[b'x'; 64]), "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c");
    }

    #[test]
    fn the_same_digest_whatever_the_pieces() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        for piece in [1, 3, 63, 64, 65, 1000, 4999] {
            let mut hasher = Sha256::new();
            data.chunks(piece).for_each(|chunk| hasher.update(chunk));
            assert_eq!(hasher.finish_hex(), sha256_hex(&data), "pieces of {piece}");
        }
    }
}
