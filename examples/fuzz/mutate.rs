//! Inputs for the fuzz runner: a seeded PRNG and mutations of valid seeds.

/// xorshift64*: deterministic, so a failing input can be replayed by seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Length prefixes that claim far more than any input holds, in the encodings
/// of bincode (`fb`/`fc`/`fd` + little endian), postcard (LEB128) and the
/// RPC frames (u32 big endian).
const BOMBS: &[&[u8]] = &[
    &[0xfd, 0, 0, 0, 0, 0, 1, 0, 0],
    &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    &[0xfc, 0xff, 0xff, 0xff, 0xff],
    &[0xfb, 0xff, 0xff],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x00, 0xff, 0xff, 0xff],
];

/// One input: random bytes, or a seed mutated one to four times.
pub fn input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.below(8) == 0 {
        let len = rng.below(48);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        mutate(rng, &mut data);
    }
    data
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    let at = |rng: &mut Rng, data: &Vec<u8>| rng.below(data.len() + 1);
    match rng.below(7) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = [0, 0xff, 0x7f, 0x80, 0xfb, 0xfc, 0xfd][rng.below(7)];
        }
        2 => {
            let i = at(rng, data);
            data.insert(i, rng.next() as u8);
        }
        3 if !data.is_empty() => {
            let i = rng.below(data.len());
            let n = rng.below(data.len() - i) + 1;
            data.drain(i..i + n.min(8));
        }
        4 => {
            let i = at(rng, data);
            let bomb = BOMBS[rng.below(BOMBS.len())];
            data.splice(i..i, bomb.iter().copied());
        }
        5 => {
            let n = at(rng, data);
            data.truncate(n);
        }
        _ => {
            let extra = rng.below(16);
            for _ in 0..extra {
                data.push(rng.next() as u8);
            }
        }
    }
}
