// The engine configuration of every runtime, and of the build script that
// compiles the embedded component ahead of time: both `include!` this file,
// so the artifact carried in the binary is always one the runtime's engine
// accepts. (The build script adds only an explicit target, to compile for
// the triple's baseline CPU rather than the build machine's.)

/// The wasmtime configuration of the runtime's engine.
fn engine_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Epoch checks let a looping component be stopped at its deadline.
    config.epoch_interruption(true);
    config
}
