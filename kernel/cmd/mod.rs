//! What the boot binary runs besides the kernel itself: the demos, the
//! bench and the fuzzer. They reach the kernel only through the library's
//! public API, as any user of it would, so none of them is compiled into
//! a test image (the KASAN model is also a workload of the tests, which
//! include `kasan_shadow.rs` the same way).

pub mod bench;
pub mod demo;
pub mod fuzz;
pub mod kasan_shadow;
