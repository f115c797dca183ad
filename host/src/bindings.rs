//! Host-side bindings generated from `wit/` (the `sub-agent` world).

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0/bgagents.wit",
    world: "sub-agent",
    imports: { default: async },
    exports: { default: async },
});

pub use self::exports::bgagents::agents::agent;

/// The WIT package guests build against, as `bgagents wit` writes it.
pub const WIT: &str = include_str!("../../wit/v0.1.0/bgagents.wit");
/// The package's name and version.
pub const WIT_PACKAGE: &str = "bgagents:agents";
pub const WIT_VERSION: &str = "0.1.0";
/// The interface a sub-agent must export, as it appears in a component.
pub const AGENT_EXPORT: &str = "bgagents:agents/agent@0.1.0";

/// Whether a guest built against `version` of the package can run here:
/// the same minor version while the major is 0, the same major after.
pub fn wit_version_compatible(version: &str) -> bool {
    let parse = |text: &str| -> Option<(u64, u64)> {
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    };
    match (parse(version), parse(WIT_VERSION)) {
        (Some((0, minor)), Some((0, ours))) => minor == ours,
        (Some((major, _)), Some((ours, _))) => major == ours,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_wit_declares_the_version_the_host_checks() {
        assert!(WIT.contains(&format!("package {WIT_PACKAGE}@{WIT_VERSION};")));
        assert!(AGENT_EXPORT.ends_with(&format!("@{WIT_VERSION}")));
    }

    #[test]
    fn versions_are_compatible_within_a_minor_while_major_is_zero() {
        assert!(wit_version_compatible("0.1.0"));
        assert!(wit_version_compatible("0.1.7"));
        assert!(!wit_version_compatible("0.2.0"));
        assert!(!wit_version_compatible("1.1.0"));
        assert!(!wit_version_compatible("nonsense"));
    }
}
