"""synfin's library: lab plumbing, peer, targets, agent protocol, verdicts, reports."""
# The peer sends and reads on one L2 socket of its own link and never routes: scapy need not read
# the host's IPv4 and IPv6 routing tables when it is imported (about 70 ms of every start).
from scapy.config import conf as _scapy_conf

_scapy_conf.route_autoload = False
_scapy_conf.route6_autoload = False
