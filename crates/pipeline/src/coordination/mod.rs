//! Which instance exports which series (`ownership`: the slots group) and what an instance
//! may write while it restores, hands over or runs (`role`).

pub(crate) mod ownership;
pub(crate) mod role;
