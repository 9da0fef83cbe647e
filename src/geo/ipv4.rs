//! A jump table over the first 16 bits of IPv4 addresses.
//!
//! An IPv4 lookup walks up to 32 nodes of the search tree (from the IPv4 subtree of an IPv6
//! database). The first 16 steps are the same for all 65,536 addresses of a /16, so they
//! are walked once when the database is opened and kept in a 256 KiB table; a lookup then
//! starts at step 17. The table only finds the record's offset: decoding stays with the
//! `maxminddb` reader, and the offsets agree with its own (a test holds them together).

use maxminddb::Metadata;

/// The gap between the search tree and the data section, as the MaxMind DB format has it.
const SEPARATOR: usize = 16;

/// Where each /16 of IPv4 has got to after its first 16 bits.
pub struct Ipv4Index {
    /// By the address's top 16 bits: a node number, or a terminal record value.
    after_16: Box<[u32]>,
    node_count: usize,
    record_size: u16,
}

/// What the tree says of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Its record, by offset in the data section.
    Record(usize),
    /// No record covers it.
    Nothing,
}

impl Ipv4Index {
    /// Builds the table for the tree in `buf`; `None` when the tree cannot be walked (the
    /// lookup then goes the reader's whole way).
    pub fn build(buf: &[u8], meta: &Metadata) -> Option<Ipv4Index> {
        let node_count = usize::try_from(meta.node_count).ok()?;
        let mut index = Ipv4Index {
            after_16: Box::default(),
            node_count,
            record_size: meta.record_size,
        };
        let mut start = 0;
        if meta.ip_version == 6 {
            // IPv4 lives under ::/96: 96 left turns from the root.
            for _ in 0..96 {
                if start >= node_count {
                    break;
                }
                start = index.child(buf, start, 0)?;
            }
        }
        let mut after_16 = Vec::with_capacity(1 << 16);
        for prefix in 0..1u32 << 16 {
            let mut node = start;
            for bit in 0..16 {
                if node >= node_count {
                    break;
                }
                node = index.child(buf, node, ((prefix >> (15 - bit)) & 1) as usize)?;
            }
            after_16.push(u32::try_from(node).ok()?);
        }
        index.after_16 = after_16.into_boxed_slice();
        Some(index)
    }

    /// The record for `ip`, or `None` when the tree is damaged on its path.
    pub fn find(&self, buf: &[u8], ip: u32) -> Option<Found> {
        let mut node = self.after_16[(ip >> 16) as usize] as usize;
        for bit in 16..32 {
            if node >= self.node_count {
                break;
            }
            node = self.child(buf, node, ((ip >> (31 - bit)) & 1) as usize)?;
        }
        match node.checked_sub(self.node_count)? {
            0 => Some(Found::Nothing),
            pointer => Some(Found::Record(pointer.checked_sub(SEPARATOR)?)),
        }
    }

    /// The left (`side` 0) or right (1) record of `node`.
    fn child(&self, buf: &[u8], node: usize, side: usize) -> Option<usize> {
        let word = |at: usize| -> Option<u32> {
            let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_be_bytes(bytes))
        };
        let value = match self.record_size {
            24 => (word(node * 6 + side * 2)? >> ((1 - side) * 8)) & 0x00ff_ffff,
            28 if side == 0 => {
                let w = word(node * 7)?;
                (w >> 8) | ((w << 20) & 0x0f00_0000)
            }
            28 => word(node * 7 + 3)? & 0x0fff_ffff,
            32 => word(node * 8 + side * 4)?,
            _ => return None,
        };
        Some(value as usize)
    }
}
