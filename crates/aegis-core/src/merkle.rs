//! Merkle trees as Certificate Transparency defines them (RFC 9162, section 2.1), with
//! SHA-256: what lets one signature cover the checkpoints of many chains
//! ([`crate::receipt::ReceiptSigner::checkpoints`]) while each chain's evidence carries only
//! its own checkpoint and the sibling hashes on its path to the signed root, never another
//! chain's data.
//!
//! A leaf hashes as `SHA-256(0x00 ‖ data)` and an inner node as `SHA-256(0x01 ‖ left ‖
//! right)`, so no leaf can pass for a node. A tree of `n` leaves splits at the largest power
//! of two below `n`; built level by level, that is a level whose last node has no partner
//! carrying that node up unchanged.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an inner node or a root.
pub type Hash = [u8; 32];

/// The hash of a leaf holding `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(data)
        .finalize()
        .into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// A tree over at least one leaf, every level kept, so that each leaf's inclusion path is
/// read off in `O(log n)` after building in `O(n)`.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// `levels[0]` are the leaf hashes; the last level is the root alone.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// The tree over `leaves` (leaf hashes, in order); `None` when there are none.
    pub fn new(leaves: Vec<Hash>) -> Option<Self> {
        if leaves.is_empty() {
            return None;
        }
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|level| level.len() > 1) {
            let pairs = level.chunks_exact(2);
            // A last node without a partner is carried up unchanged.
            let carried = pairs.remainder().to_vec();
            let mut parents: Vec<Hash> = pairs.map(|pair| node_hash(&pair[0], &pair[1])).collect();
            parents.extend(carried);
            levels.push(parents);
        }
        Some(MerkleTree { levels })
    }

    pub fn root(&self) -> Hash {
        self.levels[self.levels.len() - 1][0]
    }

    pub fn size(&self) -> usize {
        self.levels[0].len()
    }

    /// The inclusion path of leaf `index`, leaf side first (RFC 9162, 2.1.3.1); `None` when
    /// the tree has no such leaf.
    pub fn inclusion_path(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.size() {
            return None;
        }
        let mut path = Vec::with_capacity(self.levels.len() - 1);
        let mut position = index;
        for level in &self.levels[..self.levels.len() - 1] {
            // A node without a partner is carried up: it adds nothing to the path.
            if let Some(sibling) = level.get(position ^ 1) {
                path.push(*sibling);
            }
            position /= 2;
        }
        Some(path)
    }
}

/// The root that `path` proves for the leaf `leaf` at `index` of a tree of `size` leaves,
/// or `None` when the path cannot belong to such a leaf (RFC 9162, 2.1.3.2).
pub fn root_from_inclusion_path(leaf: Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut position, mut last) = (index, size - 1);
    let mut hash = leaf;
    for sibling in path {
        if last == 0 {
            return None;
        }
        if position % 2 == 1 || position == last {
            hash = node_hash(sibling, &hash);
            // Levels where this node has no partner are skipped.
            while position % 2 == 0 && position != 0 {
                position >>= 1;
                last >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        position >>= 1;
        last >>= 1;
    }
    (last == 0).then_some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex32(text: &str) -> Hash {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    /// Leaf inputs and the roots of the trees over their first 1..=8, from the Certificate
    /// Transparency reference tests (transparency-dev/merkle, `testonly/constants.go`,
    /// Apache-2.0).
    const LEAF_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference_leaves(count: usize) -> Vec<Hash> {
        LEAF_INPUTS[..count]
            .iter()
            .map(|input| leaf_hash(&hex::decode(input).unwrap()))
            .collect()
    }

    #[test]
    fn roots_match_the_certificate_transparency_reference() {
        for (count, root) in (1..=8).zip(ROOTS) {
            let tree = MerkleTree::new(reference_leaves(count)).unwrap();
            assert_eq!(tree.root(), hex32(root), "tree of {count}");
        }
    }

    #[test]
    fn the_reference_inclusion_proof_of_leaf_2_of_3_is_reproduced_and_verifies() {
        // transparency-dev/merkle `testdata/inclusion/3/happy-path.json`.
        let tree = MerkleTree::new(reference_leaves(3)).unwrap();
        let path = tree.inclusion_path(2).unwrap();
        assert_eq!(path, vec![hex32(ROOTS[1])]);
        let leaf = reference_leaves(3)[2];
        assert_eq!(
            root_from_inclusion_path(leaf, 2, 3, &path),
            Some(hex32(ROOTS[2]))
        );
    }

    #[test]
    fn an_empty_tree_has_no_root_and_no_leaf_has_a_path_beyond_the_tree() {
        assert!(MerkleTree::new(Vec::new()).is_none());
        let tree = MerkleTree::new(reference_leaves(5)).unwrap();
        assert_eq!(tree.inclusion_path(5), None);
        assert_eq!(root_from_inclusion_path(tree.root(), 5, 5, &[]), None);
    }

    proptest! {
        /// Every leaf's path proves the tree's root, and only for that leaf at that index.
        /// (A path does not fix the tree's size: the signed statement names it.)
        #[test]
        fn every_path_proves_its_leaf_and_nothing_else(size in 1usize..80, pick in any::<prop::sample::Index>()) {
            let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let tree = MerkleTree::new(leaves.clone()).unwrap();
            let index = pick.index(size);
            let path = tree.inclusion_path(index).unwrap();
            let (at, of) = (index as u64, size as u64);
            prop_assert_eq!(root_from_inclusion_path(leaves[index], at, of, &path), Some(tree.root()));
            let other = leaf_hash(b"another");
            prop_assert_ne!(root_from_inclusion_path(other, at, of, &path), Some(tree.root()));
            if size > 1 {
                let moved = (index + 1) % size;
                prop_assert_ne!(root_from_inclusion_path(leaves[index], moved as u64, of, &path), Some(tree.root()));
            }
            if let Some(first) = path.first() {
                let mut changed = path.clone();
                changed[0] = leaf_hash(first);
                prop_assert_ne!(root_from_inclusion_path(leaves[index], at, of, &changed), Some(tree.root()));
            }
        }
    }
}
