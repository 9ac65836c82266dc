//! An input leaves nothing allocated once it is handled: a service reads hostile data for
//! months, and the fuzz harness runs millions of inputs in one process.

use fuzz::{Target, measure};

/// Bytes left allocated by the second run of `input` (the first fills lazily built tables).
fn retained(target: Target, input: &[u8]) -> usize {
    let _ = measure(target, input);
    measure(target, input).retained
}

#[test]
fn no_target_keeps_memory_after_an_input() {
    // One test in this binary: the allocator's counts are process-wide.
    for target in Target::ALL {
        for seed in target.seeds() {
            assert_eq!(
                retained(target, &seed),
                0,
                "{}: a seed of {} bytes left memory behind",
                target.name(),
                seed.len()
            );
        }
    }
    // Found by `just fuzz`: the error naming a variable whose value is not UTF-8 leaked the
    // variable's name, and 600 KB names run over and over took the harness to 24 GB.
    let mut hostile = b"KAFKA_PROPERTY_".to_vec();
    hostile.extend(std::iter::repeat_n(b'A', 100_000));
    hostile.extend(b"=\xff\xfe");
    assert_eq!(retained(Target::Env, &hostile), 0, "the env error leaked");
}
