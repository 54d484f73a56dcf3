// Command natprobe measures what a NAT does to UDP, for scripts/natlab.
//
// The lab runs "natprobe serve" on two public hosts and "natprobe map"
// behind a home router. map sends from one socket to both servers, which
// answer with the source address they saw (the NAT's mapping, as STUN
// does), then asks the first server to send from a fresh port to that
// mapping (an unsolicited packet, as a stranger on the internet would).
//
//	natprobe serve 11.0.1.2:3490
//	natprobe map 11.0.1.2:3490 11.0.2.2:3490
//	-> local=10.1.0.2:40000 m1=11.1.0.2:40000 m2=11.1.0.2:40000 unsolicited=dropped
//
// An endpoint-independent ("cone") mapping gives m1 and m2 the same port; a
// symmetric NAT gives them different ports. A stateful home router drops
// the unsolicited packet. Standard library only.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Messages of the probe protocol: one UDP datagram each.
const (
	msgEcho = "echo" // client -> server; answered with the source "ip:port"
	msgPoke = "poke" // client -> server; server sends msgPoke back from a fresh socket
)

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "serve":
		err = serve(os.Args[2])
	case len(os.Args) == 4 && os.Args[1] == "map":
		err = probe(os.Args[2], os.Args[3])
	default:
		err = errors.New("usage: natprobe serve ADDR | natprobe map SERVER1 SERVER2")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "natprobe:", err)
		os.Exit(1)
	}
}

// serve answers probes on addr until killed.
func serve(addr string) error {
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	buf := make([]byte, 64)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		switch string(buf[:n]) {
		case msgEcho:
			pc.WriteTo([]byte(from.String()), from)
		case msgPoke:
			go poke(from)
		}
	}
}

// poke sends one datagram to addr from a new socket, so from a port the
// client never sent to.
func poke(addr net.Addr) {
	pc, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return
	}
	defer pc.Close()
	for range 3 {
		pc.WriteTo([]byte(msgPoke), addr)
		time.Sleep(50 * time.Millisecond)
	}
}

// probe prints the mappings seen by s1 and s2 from one local socket, and
// whether an unsolicited packet from s1's host came through.
func probe(s1, s2 string) error {
	pc, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		return err
	}
	defer pc.Close()
	m1, err := echo(pc, s1)
	if err != nil {
		return err
	}
	m2, err := echo(pc, s2)
	if err != nil {
		return err
	}
	a1, err := net.ResolveUDPAddr("udp4", s1)
	if err != nil {
		return err
	}
	pc.WriteTo([]byte(msgPoke), a1)
	unsolicited := "dropped"
	buf := make([]byte, 64)
	pc.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		if string(buf[:n]) == msgPoke {
			unsolicited = "received"
			break
		}
	}
	fmt.Printf("local=%s m1=%s m2=%s unsolicited=%s\n", pc.LocalAddr(), m1, m2, unsolicited)
	return nil
}

// echo asks server for the source address it sees, retrying lost packets.
func echo(pc net.PacketConn, server string) (string, error) {
	to, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	for range 5 {
		if _, err := pc.WriteTo([]byte(msgEcho), to); err != nil {
			return "", err
		}
		pc.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				break // deadline: send again
			}
			if from.String() == to.String() && string(buf[:n]) != msgPoke {
				return string(buf[:n]), nil
			}
		}
	}
	return "", fmt.Errorf("no answer from %s", server)
}
