//! Fuzz target: what the replay reads from a quarantine folder, on arbitrary bytes (a foreign
//! or damaged file). The reader turns a decoder panic into an error for that file, so this
//! target runs without AFL's abort-on-panic hook; an error is fine, a crash or hang is not.
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        let _ = guard_quarantine::offsets_in(bytes::Bytes::copy_from_slice(data));
    });
}
