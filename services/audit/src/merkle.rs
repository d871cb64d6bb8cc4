//! The Merkle tree of RFC 6962 §2.1 / RFC 9162 §2.1 over the log's records,
//! and its inclusion and consistency proofs.
//!
//! - leaf hash `SHA-256(0x00 || record bytes)`, node hash
//!   `SHA-256(0x01 || left || right)`, the empty tree's root `SHA-256("")`;
//! - [`Frontier`]: the right edge of the tree (one complete subtree per set
//!   bit of the size), so that an append costs O(log n) and the root of any
//!   prefix can be computed while streaming through records;
//! - [`prove_inclusion`] / [`prove_consistency`]: RFC 9162 §2.1.3.1 `PATH` and
//!   §2.1.4.1 `PROOF`, over any [`NodeSource`] that can hand out the hash of a
//!   complete, aligned subtree;
//! - [`verify_inclusion`] / [`verify_consistency`]: RFC 9162 §2.1.3.2 and
//!   §2.1.4.2, verbatim.

use sha2::{Digest as _, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The right edge of a tree: for each set bit of `size`, from the most
/// significant down, the hash of the complete subtree it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(level, hash)`, levels strictly decreasing.
    subtrees: Vec<(u8, Hash)>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from its stored
    /// complete subtrees.
    pub fn from_source<S: NodeSource + ?Sized>(
        size: u64,
        source: &S,
    ) -> Result<Frontier, S::Error> {
        let mut subtrees = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                subtrees.push((level, source.node(level, start >> level)?));
                start += 1u64 << level;
            }
        }
        Ok(Frontier { size, subtrees })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash; calls `completed(level, index, hash)` for every
    /// complete subtree of level ≥ 1 this append finishes (what a store keeps).
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(u8, u64, &Hash)) {
        let mut level = 0u8;
        let mut hash = leaf;
        let mut index = self.size;
        while let Some(&(top_level, top)) = self.subtrees.last() {
            if top_level != level {
                break;
            }
            self.subtrees.pop();
            hash = node_hash(&top, &hash);
            level += 1;
            index >>= 1;
            completed(level, index, &hash);
        }
        self.subtrees.push((level, hash));
        self.size += 1;
    }

    /// The root hash of the tree (RFC 9162 `MTH`).
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Hands out the hash of the complete subtree of `2^level` leaves starting at
/// leaf `index << level`.
pub trait NodeSource {
    type Error;
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// An in-memory tree: all leaf hashes. Computes inner nodes on demand
/// (O(2^level)); meant for tests and small trees.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    pub leaves: Vec<Hash>,
}

impl NodeSource for MemoryTree {
    type Error = std::convert::Infallible;
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        let start = (index << level) as usize;
        Ok(naive_root(&self.leaves[start..start + (1usize << level)]))
    }
}

/// RFC 9162 `MTH` of a list of leaf hashes, by the recursive definition.
pub fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly less than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// `MTH(D[start..end])` where `start` is a multiple of the largest power of
/// two not above `end - start` (always true for the ranges proofs need).
pub fn range_root<S: NodeSource + ?Sized>(
    source: &S,
    start: u64,
    end: u64,
) -> Result<Hash, S::Error> {
    let n = end - start;
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros() as u8;
        return source.node(level, start >> level);
    }
    let k = split(n);
    let left = range_root(source, start, start + k)?;
    let right = range_root(source, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of the first `size` leaves.
pub fn root_of<S: NodeSource + ?Sized>(source: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        Ok(empty_root())
    } else {
        range_root(source, 0, size)
    }
}

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofRequestError<E> {
    #[error("leaf {index} is not in a tree of {size} leaves")]
    LeafOutOfRange { index: u64, size: u64 },
    #[error("no consistency proof from size {old} to size {new}: need 0 < old <= new")]
    BadSizes { old: u64, new: u64 },
    #[error(transparent)]
    Source(E),
}

/// RFC 9162 §2.1.3.1: the audit path of leaf `index` in the tree of `size`.
pub fn prove_inclusion<S: NodeSource + ?Sized>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofRequestError<S::Error>> {
    if index >= size {
        return Err(ProofRequestError::LeafOutOfRange { index, size });
    }
    let mut path = Vec::new();
    path_rec(source, index, 0, size, &mut path).map_err(ProofRequestError::Source)?;
    Ok(path)
}

/// PATH(m, D[start..end]), appended bottom-up.
fn path_rec<S: NodeSource + ?Sized>(
    source: &S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path_rec(source, m, start, start + k, out)?;
        out.push(range_root(source, start + k, end)?);
    } else {
        path_rec(source, m - k, start + k, end, out)?;
        out.push(range_root(source, start, start + k)?);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.1: the consistency proof from `old` to `new` leaves.
/// Empty when `old == new`.
pub fn prove_consistency<S: NodeSource + ?Sized>(
    source: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofRequestError<S::Error>> {
    if old == 0 || old > new {
        return Err(ProofRequestError::BadSizes { old, new });
    }
    let mut out = Vec::new();
    if old < new {
        subproof(source, old, 0, new, true, &mut out).map_err(ProofRequestError::Source)?;
    }
    Ok(out)
}

/// SUBPROOF(m, D[start..end], b).
fn subproof<S: NodeSource + ?Sized>(
    source: &S,
    m: u64,
    start: u64,
    end: u64,
    b: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !b {
            out.push(range_root(source, start, end)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(source, m, start, start + k, b, out)?;
        out.push(range_root(source, start + k, end)?);
    } else {
        subproof(source, m - k, start + k, end, false, out)?;
        out.push(range_root(source, start, start + k)?);
    }
    Ok(())
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("the proof has the wrong number of hashes for these sizes")]
    WrongLength,
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("the proof does not lead to the old root hash")]
    OldRootMismatch,
    #[error("consistency needs 0 < old size <= new size (got {old} and {new})")]
    BadSizes { old: u64, new: u64 },
    #[error("equal sizes need equal roots and an empty proof")]
    SameSizeMismatch,
}

/// RFC 9162 §2.1.3.2: checks that `leaf` is leaf `index` of the tree of
/// `size` whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of `old` leaves with root
/// `old_root` is a prefix of the tree of `new` leaves with root `new_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    path: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old == 0 || old > new {
        return Err(ProofError::BadSizes { old, new });
    }
    if old == new {
        return if path.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::SameSizeMismatch)
        };
    }
    if path.is_empty() {
        return Err(ProofError::WrongLength);
    }
    let mut path: Vec<Hash> = path.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let mut fnode = old - 1;
    let mut snode = new - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(hex: &str) -> Hash {
        let mut out = [0u8; 32];
        for i in 0..32 {
            out[i] = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    /// The eight leaves of the RFC 6962 test data used by Certificate
    /// Transparency, Trillian and Go's `transparency-dev/merkle`.
    fn ct_leaves() -> Vec<Vec<u8>> {
        vec![
            vec![],
            vec![0x00],
            vec![0x10],
            vec![0x20, 0x21],
            vec![0x30, 0x31],
            vec![0x40, 0x41, 0x42, 0x43],
            vec![0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            (0x60..=0x6f).collect(),
        ]
    }

    fn tree_of(data: &[Vec<u8>]) -> MemoryTree {
        MemoryTree {
            leaves: data.iter().map(|d| leaf_hash(d)).collect(),
        }
    }

    /// The published roots for the prefixes of the eight leaves.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn rfc6962_roots_match_published_values_and_three_methods_agree() {
        let data = ct_leaves();
        let tree = tree_of(&data);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), h(CT_ROOTS[0]));
        assert_eq!(empty_root(), h(CT_ROOTS[0]));
        #[allow(clippy::needless_range_loop)]
        for size in 1..=8usize {
            frontier.push(tree.leaves[size - 1], |_, _, _| {});
            let naive = naive_root(&tree.leaves[..size]);
            assert_eq!(naive, h(CT_ROOTS[size]), "naive root of {size}");
            assert_eq!(frontier.root(), naive, "frontier root of {size}");
            assert_eq!(root_of(&tree, size as u64).unwrap(), naive);
            let rebuilt = Frontier::from_source(size as u64, &tree).unwrap();
            assert_eq!(rebuilt, frontier);
        }
    }

    /// Inclusion and consistency proofs published with the same test data.
    #[test]
    fn rfc6962_published_proofs() {
        let tree = tree_of(&ct_leaves());
        let p = prove_inclusion(&tree, 0, 8).unwrap();
        assert_eq!(
            p,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ]
        );
        let c = prove_consistency(&tree, 1, 8).unwrap();
        assert_eq!(c, p);
        let c = prove_consistency(&tree, 6, 8).unwrap();
        assert_eq!(
            c,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ]
        );
        let c = prove_consistency(&tree, 2, 5).unwrap();
        assert_eq!(
            c,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ]
        );
    }

    fn check_all_proofs(tree: &MemoryTree, sizes: impl Iterator<Item = u64>) {
        for size in sizes {
            let root = naive_root(&tree.leaves[..size as usize]);
            for index in 0..size {
                let leaf = tree.leaves[index as usize];
                let path = prove_inclusion(tree, index, size).unwrap();
                verify_inclusion(&leaf, index, size, &path, &root).unwrap();
                // Tampering: each hash flipped, one dropped, one added, wrong index.
                for i in 0..path.len() {
                    let mut bad = path.clone();
                    bad[i][0] ^= 1;
                    assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                }
                if !path.is_empty() {
                    let mut bad = path.clone();
                    bad.pop();
                    assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                }
                let mut bad = path.clone();
                bad.push(root);
                assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(verify_inclusion(&leaf, other, size, &path, &root).is_err());
                }
                let mut bad_leaf = leaf;
                bad_leaf[31] ^= 0x80;
                assert!(verify_inclusion(&bad_leaf, index, size, &path, &root).is_err());
            }
            for old in 1..=size {
                let old_root = naive_root(&tree.leaves[..old as usize]);
                let path = prove_consistency(tree, old, size).unwrap();
                verify_consistency(old, size, &path, &old_root, &root).unwrap();
                for i in 0..path.len() {
                    let mut bad = path.clone();
                    bad[i][5] ^= 4;
                    assert!(verify_consistency(old, size, &bad, &old_root, &root).is_err());
                }
                if !path.is_empty() {
                    let mut bad = path.clone();
                    bad.pop();
                    assert!(verify_consistency(old, size, &bad, &old_root, &root).is_err());
                    let mut wrong_old = old_root;
                    wrong_old[0] ^= 1;
                    assert!(verify_consistency(old, size, &path, &wrong_old, &root).is_err());
                }
                let mut wrong_new = root;
                wrong_new[0] ^= 1;
                assert!(verify_consistency(old, size, &path, &old_root, &wrong_new).is_err());
            }
        }
    }

    #[test]
    fn every_proof_for_sizes_1_to_8_verifies_and_tampered_ones_fail() {
        check_all_proofs(&tree_of(&ct_leaves()), 1..=8);
    }

    #[test]
    fn proofs_for_larger_pseudo_random_sizes() {
        // A fixed xorshift sequence: reproducible "random" sizes.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let data: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let tree = tree_of(&data);
        let sizes: Vec<u64> = (0..6).map(|_| 9 + next() % 290).collect();
        check_all_proofs(&tree, sizes.into_iter());
    }

    #[test]
    fn frontier_reports_each_completed_subtree_once() {
        let tree = tree_of(&(0..37u8).map(|i| vec![i]).collect::<Vec<_>>());
        let mut f = Frontier::new();
        let mut seen = std::collections::BTreeMap::new();
        for leaf in &tree.leaves {
            f.push(*leaf, |level, index, hash| {
                assert!(seen.insert((level, index), *hash).is_none());
            });
        }
        for ((level, index), hash) in &seen {
            assert_eq!(*hash, tree.node(*level, *index).unwrap());
        }
        // 37 leaves: 18 + 9 + 4 + 2 + 1 complete inner subtrees.
        assert_eq!(seen.len(), 34);
    }

    #[test]
    fn bad_requests_are_refused() {
        let tree = tree_of(&ct_leaves());
        assert!(prove_inclusion(&tree, 8, 8).is_err());
        assert!(prove_consistency(&tree, 0, 3).is_err());
        assert!(prove_consistency(&tree, 4, 3).is_err());
        assert!(prove_consistency(&tree, 3, 3).unwrap().is_empty());
        let r = naive_root(&tree.leaves[..3]);
        verify_consistency(3, 3, &[], &r, &r).unwrap();
        assert!(verify_consistency(3, 3, &[r], &r, &r).is_err());
    }
}
