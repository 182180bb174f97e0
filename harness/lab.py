"""The lab: one veth link between a peer namespace (no IP address) and a target's namespace.

    peer netns  synNNNN-pK                          target netns (container or synNNNN-tK)
      synNNNNpK (no address) ──── veth ────  eth0 198.18.b.2/24, permanent neighbour for .1

For a user-space stack the target namespace's kernel holds no address at all: eth0 and a TAP
(tap0, which the stack opens) are bridged, and the stack owns 198.18.b.2 and its MAC:

      synNNNNpK ──── veth ────  eth0 ─ br0 ─ tap0 ⇢ stack (198.18.b.2, MAC ..:02)

The peer's kernel owns no lab address, so it never answers the target's segments; scapy owns
198.18.b.1. Checksum and segmentation offloads are off on both ends so captures show real
checksums and real segment sizes.
"""
import ipaddress
import os
import shutil
import time
from dataclasses import dataclass

from pyroute2 import IPRoute, netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.ethtool import Ethtool

from . import netns
from .cleanup import REGISTRY, RUN_ROOT, owner_alive, owner_of, owner_prefix
from .errors import LabError, TargetError

LAB_NET = ipaddress.ip_network("198.18.0.0/15")
BLOCKS = LAB_NET.num_addresses // 256
TARGET_IFNAME = "eth0"
TAP_IFNAME = "tap0"
BRIDGE_IFNAME = "br0"
NUD_PERMANENT = 0x80
_OFFLOADS = (
    "tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-sctp", "rx-checksum",
    "tx-scatter-gather", "tx-tcp-segmentation", "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation", "tx-generic-segmentation",
    "rx-gro", "rx-gro-list", "rx-udp-gro-forwarding",
)


@dataclass(frozen=True)
class Addressing:
    """The /24 a lab uses: the peer is .1, the target .2; MACs are locally administered."""

    block: int

    @property
    def network(self) -> ipaddress.IPv4Network:
        base = int(LAB_NET.network_address) + (self.block % BLOCKS) * 256
        return ipaddress.ip_network((base, 24))

    @property
    def peer_ip(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def target_ip(self) -> str:
        return str(self.network.network_address + 2)

    @property
    def peer_mac(self) -> str:
        return "02:53:59:%02x:%02x:01" % divmod(self.block % BLOCKS, 256)

    @property
    def target_mac(self) -> str:
        return "02:53:59:%02x:%02x:02" % divmod(self.block % BLOCKS, 256)

    def spare_mac(self, n: int) -> str:
        """MACs for the bridge ports in front of a user-space stack (never the stack's own)."""
        return "02:53:59:%02x:%02x:%02x" % (*divmod(self.block % BLOCKS, 256), n)

    def stack_env(self) -> dict[str, str]:
        """What a user-space stack needs to come up on its TAP."""
        return {"SYNFIN_IFACE": TAP_IFNAME, "SYNFIN_MAC": self.target_mac,
                "SYNFIN_ADDR": f"{self.target_ip}/24", "SYNFIN_PEER": self.peer_ip}


def _disable_offloads(ifname: str) -> None:
    eth = Ethtool()
    try:
        features = eth.get_features(ifname)
        for name in _OFFLOADS:
            feature = features.features.get(name)
            if feature is not None and feature.available:
                feature.enable = False
        eth.set_features(ifname, features)
    finally:
        eth.close()


class Lab:
    """One isolated link. `build()` makes the peer's namespace (while the target starts);
    `plug_target()` the link into the target's namespace and its addressing."""

    def __init__(self, index: int, block: int):
        self.index = index
        self.addr = Addressing(block)
        prefix = owner_prefix()
        self.peer_ns = f"{prefix}-p{index}"
        self.peer_if = f"{prefix}p{index}"
        self._undo = None

    # -- peer side ------------------------------------------------------------------------
    def build(self) -> "Lab":
        self._undo = REGISTRY.add(f"lab {self.peer_ns}", self.destroy)
        try:
            pr_netns.create(self.peer_ns)
            # A namespace made while Docker runs may inherit ip_forward=1: the peer's kernel must
            # neither forward nor speak IPv6 on the lab link.
            netns.run_in(self.peer_netns_path(), _sysctls, (
                ("net.ipv4.ip_forward", 0), ("net.ipv6.conf.all.disable_ipv6", 1),
                ("net.ipv6.conf.default.disable_ipv6", 1)))
        except Exception as exc:
            self.destroy()
            raise LabError(f"could not build lab {self.peer_ns}: {exc}") from exc
        return self

    # -- the link and the target side -----------------------------------------------------
    def plug_target(self, target_netns: str, kernel: bool = True) -> None:
        """Make the link with its far end in `target_netns` (a path or a name); address that end
        for a kernel stack, or bridge it to a TAP for a user-space stack.

        Each end is made where it lives and set up from a thread inside that namespace: moving
        a link between namespaces, or pyroute2's NetNS (a forked helper), costs 10-30 ms each."""
        path = netns.netns_path(target_netns)
        try:
            # Before the link exists there: its end must never come up with IPv6.
            netns.run_in(path, _sysctls, (("net.ipv6.conf.all.disable_ipv6", 1),
                                          ("net.ipv6.conf.default.disable_ipv6", 1)))
            fd = os.open(path, os.O_RDONLY)
            try:
                netns.run_in(self.peer_netns_path(), self._make_link, fd)
            finally:
                os.close(fd)
            netns.run_in(path, self._set_up_target, kernel)
        except Exception as exc:
            raise LabError(f"could not plug the target end of {self.peer_ns} into {target_netns}: {exc}") from exc

    def _make_link(self, target_fd: int) -> None:
        with IPRoute() as ip:
            ip.link("add", ifname=self.peer_if, kind="veth", peer={"ifname": TARGET_IFNAME, "net_ns_fd": target_fd})
            _disable_offloads(self.peer_if)
            ip.link("set", index=ip.link_lookup(ifname=self.peer_if)[0], address=self.addr.peer_mac, state="up")

    def _set_up_target(self, kernel: bool) -> None:
        _disable_offloads(TARGET_IFNAME)
        with IPRoute() as ns:
            idx = ns.link_lookup(ifname=TARGET_IFNAME)[0]
            lo = ns.link_lookup(ifname="lo")
            if lo:
                ns.link("set", index=lo[0], state="up")
            if kernel:
                self._address_kernel(ns, idx)
            else:
                self._bridge_to_tap(ns, idx)

    def _address_kernel(self, ns, idx: int) -> None:
        ns.link("set", index=idx, address=self.addr.target_mac, state="up")
        ns.addr("add", index=idx, address=self.addr.target_ip, prefixlen=24)
        # The target never has to ARP for the peer: its answers go out at once.
        ns.neigh("add", dst=self.addr.peer_ip, lladdr=self.addr.peer_mac, ifindex=idx, state=NUD_PERMANENT)

    def _bridge_to_tap(self, ns, idx: int) -> None:
        # A persistent TAP owned by uid 0: the stack's agent (root, without CAP_NET_ADMIN) may
        # attach to it but cannot reconfigure the namespace.
        ns.link("set", index=idx, address=self.addr.spare_mac(3))
        ns.link("add", ifname=TAP_IFNAME, kind="tuntap", mode="tap", uid=0)
        tap = ns.link_lookup(ifname=TAP_IFNAME)[0]
        ns.link("set", index=tap, address=self.addr.spare_mac(4))
        ns.link("add", ifname=BRIDGE_IFNAME, kind="bridge", br_stp_state=0, br_forward_delay=0)
        br = ns.link_lookup(ifname=BRIDGE_IFNAME)[0]
        ns.link("set", index=br, address=self.addr.spare_mac(5))
        for port in (idx, tap):
            ns.link("set", index=port, master=br)
        for link in (idx, tap, br):
            ns.link("set", index=link, state="up")
        leaked = [a.get_attr("IFA_ADDRESS") for a in ns.get_addr(family=2)
                  if not a.get_attr("IFA_ADDRESS", "").startswith("127.")]
        if leaked:
            raise LabError(f"the target namespace's own kernel holds {leaked}: it would answer in "
                           "the user-space stack's name")

    def carrier_up(self, target_netns: str, kernel: bool = True, within: float = 2.0) -> None:
        """Wait until every link of the lab carries frames: both ends of the veth and, for a
        user-space stack, its TAP (up once the stack has attached) with the bridge forwarding.

        The kernel applies a carrier change (and a bridge enables its port) from its linkwatch
        queue, which runs at most once a second: a first segment sent before then is lost.
        Asking for a link by index (rtnl_getlink, linkwatch_sync_dev) applies it at once."""
        where = [(self.peer_netns_path(), self.peer_if)]
        where += [(netns.netns_path(target_netns), name) for name in ((TARGET_IFNAME,) if kernel else (TARGET_IFNAME, TAP_IFNAME))]
        deadline = time.monotonic() + within
        for path, name in where:
            while True:
                state = netns.run_in(path, _link_state, name)
                if state == (1, "UP"):
                    break
                if time.monotonic() >= deadline:
                    if name == TAP_IFNAME:  # its carrier is the stack's: it opens the TAP
                        raise TargetError(f"the stack did not attach to its TAP {TAP_IFNAME}: no carrier "
                                          f"{within:g} s after hello (operstate {state[1]})")
                    raise LabError(f"link {name} of lab {self.peer_ns} has no carrier after {within:g} s "
                                   f"(carrier {state[0]}, operstate {state[1]})")
                time.sleep(0.001)

    def peer_netns_path(self) -> str:
        return netns.netns_path(self.peer_ns)

    # -- teardown -------------------------------------------------------------------------
    def destroy(self) -> None:
        """Remove the peer namespace, which takes the link (both ends) with it."""
        if self.peer_ns in pr_netns.listnetns():
            pr_netns.remove(self.peer_ns)

    def close(self) -> None:
        if self._undo is not None:
            REGISTRY.run(self._undo)
            self._undo = None


def _link_state(name: str) -> tuple[int, str]:
    with IPRoute() as ip:
        link = ip.link("get", index=ip.link_lookup(ifname=name)[0])[0]
    return link.get_attr("IFLA_CARRIER"), link.get_attr("IFLA_OPERSTATE")


def _sysctls(settings) -> None:
    """Write sysctls as the calling thread's namespace sees them (inside netns.run_in)."""
    for name, value in settings:
        with open(netns.sysctl_path(name), "w") as f:
            f.write(str(value))


def create_netns(name: str) -> tuple[str, int]:
    """A bare namespace for a target without Docker: its path, and the token that removes it
    (REGISTRY.run(token)); removed with the run at the latest."""
    pr_netns.create(name)
    token = REGISTRY.add(f"netns {name}", lambda: name in pr_netns.listnetns() and pr_netns.remove(name))
    return netns.netns_path(name), token


def run_dir(label: str) -> str:
    """A private directory for a target's control socket and logs, removed with the run."""
    path = os.path.join(RUN_ROOT, f"{owner_prefix()}-{label}")
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o700)  # an agent's control socket is root's alone (whatever the umask)
    REGISTRY.add(f"dir {path}", lambda: shutil.rmtree(path, ignore_errors=True))
    return path


def sweep() -> list[str]:
    """Remove namespaces, links and run directories left by synfin runs whose process is gone.

    Two workers of one run may sweep at once: an object the other one removed first is skipped."""
    removed = []

    def remove(what: str, fn, *args) -> None:
        try:
            fn(*args)
            removed.append(what)
        except (OSError, NetlinkError):
            pass

    for name in pr_netns.listnetns():
        pid = owner_of(name)
        if pid is not None and not owner_alive(pid):
            remove(f"netns {name}", pr_netns.remove, name)
    with IPRoute() as ip:
        for link in ip.get_links():
            name = link.get_attr("IFLA_IFNAME")
            pid = owner_of(name)
            if pid is not None and not owner_alive(pid):
                remove(f"link {name}", lambda idx=link["index"]: ip.link("del", index=idx))
    for entry in os.listdir(RUN_ROOT) if os.path.isdir(RUN_ROOT) else ():
        pid = owner_of(entry, run_dir=True)
        if pid is not None and not owner_alive(pid):
            remove(f"dir {RUN_ROOT}/{entry}", shutil.rmtree, os.path.join(RUN_ROOT, entry))
    return removed
