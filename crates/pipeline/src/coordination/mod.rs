//! Which instance exports which series (`ownership`: the slots group), what an instance
//! may write while it restores, hands over or runs (`role`), and what its board serves
//! before its state is restored (`early`).

pub(crate) mod early;
pub(crate) mod ownership;
pub(crate) mod role;
