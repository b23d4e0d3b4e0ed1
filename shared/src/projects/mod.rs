//! Projects and their files: routes, the `ProjectPath` newtype and the
//! built-in templates.

pub mod files;
pub mod handlers;
pub mod path;
pub mod preview;
pub mod templates;
