//! The only file with exports.
const abi = @import("abi.zig");
export fn mcr_abi_version() u32 {
    return abi.version;
}
