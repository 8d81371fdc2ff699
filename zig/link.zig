//! Link facts (index, MTU, flags, IPv4 address) by name, with ioctl on an AF_INET socket: the
//! view of the network namespace this process is in, unlike /sys which depends on mounts.
const std = @import("std");
const linux = std.os.linux;
const sys = @import("sys.zig");
const abi = @import("abi.zig");

pub const IFNAMSIZ = 16;
const Ifreq = extern struct {
    name: [IFNAMSIZ]u8,
    data: extern union {
        ifindex: i32,
        mtu: i32,
        flags: i16,
        addr: linux.sockaddr.in,
        pad: [24]u8,
    },
};

pub const IFF_UP: u32 = 0x1;
pub const IFF_RUNNING: u32 = 0x40;
pub const IFF_MULTICAST: u32 = 0x1000;

pub fn query(name: []const u8) sys.Error!abi.LinkInfo {
    if (name.len == 0 or name.len >= IFNAMSIZ) return error.INVAL;
    const fd: i32 = @intCast(try sys.call("socket", linux.socket(linux.AF.INET, linux.SOCK.DGRAM | linux.SOCK.CLOEXEC, 0)));
    defer sys.close(fd);
    var req = std.mem.zeroes(Ifreq);
    @memcpy(req.name[0..name.len], name);

    var info = std.mem.zeroes(abi.LinkInfo);
    _ = try sys.call("ioctl", linux.ioctl(fd, linux.SIOCGIFINDEX, @intFromPtr(&req)));
    info.ifindex = @intCast(req.data.ifindex);
    _ = try sys.call("ioctl", linux.ioctl(fd, linux.SIOCGIFMTU, @intFromPtr(&req)));
    info.mtu = @intCast(req.data.mtu);
    _ = try sys.call("ioctl", linux.ioctl(fd, linux.SIOCGIFFLAGS, @intFromPtr(&req)));
    info.flags = @as(u16, @bitCast(req.data.flags));
    if (sys.call("ioctl", linux.ioctl(fd, linux.SIOCGIFADDR, @intFromPtr(&req)))) |_| {
        info.addr4[10] = 0xff;
        info.addr4[11] = 0xff;
        std.mem.writeInt(u32, info.addr4[12..16], req.data.addr.addr, .native);
    } else |err| switch (err) {
        error.ADDRNOTAVAIL => {}, // no IPv4 address: all-zero
        else => return err,
    }
    return info;
}

test "loopback is found with its address; a missing link is NODEV" {
    const lo = try query("lo");
    try std.testing.expect(lo.ifindex >= 1);
    try std.testing.expect(lo.mtu >= 1500);
    try std.testing.expectError(error.NODEV, query("mcr-nonexist0"));
    try std.testing.expectError(error.INVAL, query("a-name-much-too-long"));
}
