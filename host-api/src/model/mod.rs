//! The host's own typed model of what a guest may ask for. No WIT type
//! appears here: each WIT version's binding layer (`crate::host`) converts
//! into these, and the kernel backends, the journal and the guard work on
//! them only, so a new WIT version never touches the kernel layer.

pub mod nft;
