"""The FIN after close() with data still unacknowledged (RFC 2525 §2.15)."""
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("RFC2525-2.15", "SHOULD")
def test_fin_follows_unacknowledged_data_without_waiting_for_its_ack(lab):
    """RFC 2525 §2.15 "Failure to send FIN notification promptly": "When an application closes a
    connection, the corresponding TCP should send the FIN notification promptly to its peer
    (unless prevented by the congestion window). If a TCP implementation delays in sending the
    FIN notification, for example due to waiting until unacknowledged data has been acknowledged,
    then it is said to exhibit "Failure to send FIN notification promptly"." The target sends 40
    bytes and closes; the peer acknowledges nothing: the FIN comes right after the data (or on
    it, as in the RFC's trace of correct behaviour), before any retransmission of the data.
    Recorded: whether the FIN rides on the data, and whether it carries PSH ("FIN segments
    should include the PSH flag")."""
    conn, _, sock = lab.passive_open()
    data = b"40 bytes the peer will not acknowledge.."
    start = seq_add(conn.irs, 1)
    assert lab.target.send(sock, data) == len(data)
    lab.target.close(sock)
    first = conn.expect(Seg("A", seq=start, ack=conn.snd_nxt, payload=data, note="the 40 bytes")
                        | Seg("FA", seq=start, ack=conn.snd_nxt, payload=data, note="the 40 bytes with the FIN"))
    fin = first
    if "F" not in str(first.flags):
        # Not acknowledging the data: a stack that waits for its ACK retransmits it instead.
        fin = conn.expect_next(Seg("FA", seq=seq_add(start, len(data)), ack=conn.snd_nxt, length=0,
                                   note="FIN right after the data"),
                               why="the FIN must follow close() without waiting for the data's ACK")
    lab.note("fin_after_data_ms", round((fin.synfin_t - first.synfin_t) * 1000, 1))
    lab.choice("fin", ("on the data segment" if fin is first else "separate segment after the data")
               + ("; PSH set" if "P" in str(fin.flags) else "; no PSH"))
    with lab.step("the FIN's ACK: FIN-WAIT-2", "R9293-3.6"):
        conn.ack()
        assert lab.target.conn_state(conn.dport, conn.sport) == "FIN-WAIT-2"
