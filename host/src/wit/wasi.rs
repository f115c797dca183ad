//! WASI 0.2 as guests get it: wasmtime-wasi's implementation over the
//! task's sandboxed context, with symlink creation refused.

use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;

/// Adds WASI 0.2 to `linker`, every earlier 0.2 version linked to it.
pub fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    refuse_symlink_creation(linker)
}

/// The WASI filesystem interface the linker provides (guests importing any
/// earlier 0.2 version are linked to it).
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces `descriptor.symlink-at` with one that always answers
/// `not-permitted`. A guest cannot follow a symlink out of its grant, but a
/// link it planted in a read-write grant (`out/l -> ../secret`) would be
/// followed by whatever on the host uses that directory later.
fn refuse_symlink_creation<T: 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::Descriptor;
    use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
    linker.allow_shadowing(true);
    let replaced = linker.instance(WASI_FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.symlink-at",
        |_store, (_dir, _target, _link): (Resource<Descriptor>, String, String)| {
            Box::new(async { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) })
        },
    );
    linker.allow_shadowing(false);
    replaced
}
