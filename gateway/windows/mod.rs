//! Emergency access windows: the model and its lifecycle, the store, the manager that
//! opens and closes them on time and cuts the connections riding them, and the webhook.

pub mod manager;
pub mod model;
pub mod notify;
pub mod store;

pub use manager::{Actor, ManagerError, WindowManager};
pub use model::{Action, State, TransitionError, Window};
pub use store::{BlockStore, SqliteStore, StoreError, WindowStore};
