//! Commands built at their final size, for the round trips every request makes.
//!
//! redis-rs grows a command's buffers as each argument is written: about 500 instructions an
//! argument, which made up a tenth of a session load's own work. Sized from its arguments, a
//! command allocates its buffers once.

use ::redis::Cmd;

/// The command `args` (its name first), with room for all of them.
pub fn sized(args: &[&[u8]]) -> Cmd {
    let bytes = args.iter().map(|arg| arg.len()).sum();
    let mut command = Cmd::with_capacity(args.len(), bytes);
    for arg in args {
        command.arg(*arg);
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_as_the_command_built_argument_by_argument() {
        let built = ::redis::cmd("PEXPIRE")
            .arg("s:{abc}")
            .arg(1_800_000)
            .clone();
        let sized = sized(&[b"PEXPIRE", b"s:{abc}", b"1800000"]);
        assert_eq!(sized.get_packed_command(), built.get_packed_command());
    }
}
