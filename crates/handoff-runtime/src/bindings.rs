//! Host bindings for the `handoff` world, generated once and kept private:
//! the crate re-exports its own documented types instead.

mod gen_ {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "handoff",
        // The component's descriptors must be wasmtime-wasi's own resource
        // type, else instantiation fails with a resource type mismatch.
        with: { "wasi": wasmtime_wasi::p2::bindings::sync },
        // A bad descriptor handle from the guest is a trap, not a protocol
        // outcome.
        imports: { default: trappable },
        require_store_data_send: true,
    });
}

pub(crate) use gen_::Handoff;
pub(crate) use gen_::HandoffPre;
pub(crate) use gen_::exports::handoff::protocol::protocol as wit;
pub(crate) use gen_::handoff::protocol::bulk;
pub(crate) use gen_::handoff::protocol::durability;
pub(crate) use gen_::handoff::protocol::types as wit_types;
