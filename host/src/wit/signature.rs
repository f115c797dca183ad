//! Checking a guest's `agent.run` export against what the host calls, with
//! a message that shows the guest's signature in WIT syntax.

use wasmtime::component::{ComponentType, InstancePre, Lower};

/// Type-checks `export`'s `run` against `run(request: R) -> result<string,
/// string>`, so a guest with the wrong signature is refused at load (by
/// `check`) instead of failing every task at call time.
pub fn check_run<T: 'static, R: ComponentType + Lower>(
    pre: &InstancePre<T>,
    export: &str,
    shown: &str,
) -> Result<(), String> {
    use wasmtime::component::types::ComponentItem;
    let component = pre.component();
    // A missing export is left to the world check that follows, which names it.
    let Some((_, instance)) = component.get_export(None, export) else {
        return Ok(());
    };
    let mismatch = |found: String| {
        format!(
            "{shown} does not fit the `sub-agent` world: its `{export}` exports {found}, \
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
    run.typecheck::<(&R,), (Result<String, String>,)>(&pre.instance_type())
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
