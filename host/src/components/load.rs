//! Loading one agent's component: read, recognise, compile, and check that it
//! fits the `sub-agent` world, with errors that say what to do about it.

use super::cache::{CacheOutcome, ComponentCache};
use crate::bindings::agent::Request;
use crate::bindings::{
    AGENT_EXPORT, SubAgentPre, WIT_PACKAGE, WIT_VERSION, wit_version_compatible,
};
use crate::config::read::read_component;
use std::path::Path;
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::Linker;

/// What loading is doing, for a front-end to show while it waits.
#[derive(Debug, Clone, Copy)]
pub enum LoadProgress<'a> {
    /// `path` (`bytes` long) is not in the cache and is being compiled, which
    /// can take many seconds for a large component. `cached_after`: the
    /// result will be cached, so the next load is quick.
    Compiling {
        path: &'a Path,
        bytes: u64,
        cached_after: bool,
    },
    /// Compiling `path` ended (successfully or not) after `took`.
    Compiled { path: &'a Path, took: Duration },
}

/// A component ready to instantiate, and how it got so.
pub struct LoadedComponent<T: 'static> {
    pub pre: SubAgentPre<T>,
    pub cache: CacheOutcome,
    /// Reading, compiling or loading from the cache, and linking.
    pub took: Duration,
}

/// Compiles (or loads from `cache`) the component at `path` and
/// pre-instantiates it against `linker`, telling `progress` when it has to
/// compile. The error is a complete sentence naming the file.
pub fn load_component<T: 'static>(
    engine: &Engine,
    linker: &Linker<T>,
    cache: &ComponentCache,
    path: &Path,
    progress: &dyn Fn(LoadProgress),
) -> Result<LoadedComponent<T>, String> {
    let started = Instant::now();
    // `dir/./agent.wasm` is shown as `dir/agent.wasm`.
    let tidy: std::path::PathBuf = path
        .components()
        .filter(|part| *part != std::path::Component::CurDir)
        .collect();
    let shown = tidy.display();
    // Only a regular file, within a size cap, that looks like a component.
    let bytes = read_component(&tidy)?;
    let compiling = !cache.contains(engine, &bytes);
    if compiling {
        progress(LoadProgress::Compiling {
            path,
            bytes: bytes.len() as u64,
            cached_after: cache.dir().is_some(),
        });
    }
    let compile_started = Instant::now();
    let loaded = cache.load(engine, &bytes);
    if compiling {
        progress(LoadProgress::Compiled {
            path,
            took: compile_started.elapsed(),
        });
    }
    let (component, outcome) =
        loaded.map_err(|error| format!("{shown} is not a valid component: {error:#}"))?;
    check_wit_version(engine, &component.component_type(), &shown.to_string())?;
    let pre = linker.instantiate_pre(&component).map_err(|error| {
        format!(
            "{shown} imports something bgagents does not provide ({error:#}); a sub-agent may \
             import WASI 0.2 and the bgagents:agents interfaces in wit/ (output, background-agents)"
        )
    })?;
    check_agent_export(&pre, &shown.to_string())?;
    let pre = SubAgentPre::new(pre).map_err(|error| {
        format!(
            "{shown} does not fit the `sub-agent` world ({error:#}); it must export \
             `{AGENT_EXPORT}` with `run: func(request) -> result<string, string>`, \
             as the wit/ package describes"
        )
    })?;
    Ok(LoadedComponent {
        pre,
        cache: outcome,
        took: started.elapsed(),
    })
}

/// Refuses a component built against an incompatible version of our WIT
/// package, naming both versions (before linking would give a vaguer error).
fn check_wit_version(
    engine: &Engine,
    component: &wasmtime::component::types::Component,
    shown: &str,
) -> Result<(), String> {
    let imports = component.imports(engine).map(|(name, _)| name);
    let exports = component.exports(engine).map(|(name, _)| name);
    for name in imports.chain(exports) {
        let Some(version) = name
            .strip_prefix(WIT_PACKAGE)
            .and_then(|rest| rest.split_once('@'))
            .map(|(_, version)| version)
        else {
            continue;
        };
        if !wit_version_compatible(version) {
            return Err(format!(
                "{shown} was built for {WIT_PACKAGE}@{version}, but this host provides \
                 {WIT_PACKAGE}@{WIT_VERSION}; rebuild the plugin against the WIT that \
                 `bgagents wit` writes (a host accepts guests of the same 0.minor version)"
            ));
        }
    }
    Ok(())
}

/// Type-checks the `agent.run` export against what the host calls, so a
/// guest with the wrong signature is refused at load (by `check`) instead of
/// failing every task at call time.
fn check_agent_export<T: 'static>(
    pre: &wasmtime::component::InstancePre<T>,
    shown: &str,
) -> Result<(), String> {
    use wasmtime::component::types::ComponentItem;
    let component = pre.component();
    // A missing export is left to the world check that follows, which names it.
    let Some((_, instance)) = component.get_export(None, AGENT_EXPORT) else {
        return Ok(());
    };
    let mismatch = |found: String| {
        format!(
            "{shown} does not fit the `sub-agent` world: its `{AGENT_EXPORT}` exports {found}, \
             but the host calls `{RUN_SIGNATURE}`; rebuild it against the WIT that `bgagents wit` \
             writes"
        )
    };
    let Some((item, _)) = component.get_export(Some(&instance), "run") else {
        return Ok(());
    };
    let ComponentItem::ComponentFunc(run) = item else {
        return Err(mismatch("a `run` that is not a function".to_string()));
    };
    run.typecheck::<(&Request,), (Result<String, String>,)>(&pre.instance_type())
        .map_err(|_| mismatch(format!("`run: {}`", render_func(&run))))
}

/// `run`'s type as the WIT declares it.
const RUN_SIGNATURE: &str = "run: func(request: request) -> result<string, string>";

/// A function type in WIT syntax, for messages.
fn render_func(func: &wasmtime::component::types::ComponentFunc) -> String {
    let params: Vec<String> = func
        .params()
        .map(|(name, ty)| format!("{name}: {}", render_type(&ty)))
        .collect();
    let results: Vec<String> = func.results().map(|ty| render_type(&ty)).collect();
    match results.as_slice() {
        [] => format!("func({})", params.join(", ")),
        [one] => format!("func({}) -> {one}", params.join(", ")),
        many => format!("func({}) -> ({})", params.join(", "), many.join(", ")),
    }
}

fn render_type(ty: &wasmtime::component::Type) -> String {
    use wasmtime::component::Type;
    let optional = |ty: Option<Type>| ty.map_or("_".to_string(), |ty| render_type(&ty));
    match ty {
        Type::List(list) => format!("list<{}>", render_type(&list.ty())),
        Type::Option(option) => format!("option<{}>", render_type(&option.ty())),
        Type::Result(result) => format!(
            "result<{}, {}>",
            optional(result.ok()),
            optional(result.err())
        ),
        Type::Tuple(tuple) => format!(
            "tuple<{}>",
            tuple
                .types()
                .map(|ty| render_type(&ty))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Record(record) => format!(
            "record {{ {} }}",
            record
                .fields()
                .map(|field| format!("{}: {}", field.name, render_type(&field.ty)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::Variant(_) => "variant".into(),
        Type::Enum(_) => "enum".into(),
        Type::Flags(_) => "flags".into(),
        Type::Own(_) | Type::Borrow(_) => "resource".into(),
        _ => "an async type".into(),
    }
}
