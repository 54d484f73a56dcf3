package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/debugsrv"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
)

// TestAdmissionTools: --gen-admission-secret prints a secret whose public
// key the rendezvous derives from the environment, and
// --issue-relay-token mints a token that key accepts for the named relay
// only.
func TestAdmissionTools(t *testing.T) {
	o, err := parseFlags([]string{"--gen-admission-secret"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if done, err := o.trust.tool(&out, func(string) string { return "" }, time.Now()); !done || err != nil {
		t.Fatalf("gen: done %v err %v", done, err)
	}
	secret, _, _ := strings.Cut(strings.TrimPrefix(out.String(), envAdmissionSecret+"="), "\n")
	env := func(k string) string {
		if k == envAdmissionSecret {
			return secret
		}
		return ""
	}

	o, err = parseFlags([]string{"--issue-relay-token", "--token-relay", "12D3KooWA", "--token-name", "home-1", "--token-ttl", "1h"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	now := time.Now()
	if done, err := o.trust.tool(&out, env, now); !done || err != nil {
		t.Fatalf("issue: done %v err %v", done, err)
	}
	tok := strings.TrimSpace(out.String())

	o, err = parseFlags([]string{"--admission", "operator"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.trust.apply(&o.cfg, env); err != nil {
		t.Fatal(err)
	}
	if o.cfg.Admission != rendezvous.AdmissionOperator || o.cfg.AdmissionKey == nil {
		t.Fatalf("config: admission %q key %v, want operator and a key", o.cfg.Admission, o.cfg.AdmissionKey)
	}
	c, err := proto.ParseAdmission(o.cfg.AdmissionKey, tok, "12D3KooWA", now)
	if err != nil || c.Name != "home-1" {
		t.Errorf("token for its relay: claims %+v err %v, want name home-1", c, err)
	}
	if _, err := proto.ParseAdmission(o.cfg.AdmissionKey, tok, "12D3KooWB", now); err == nil {
		t.Error("token for another relay: got nil error")
	}
	if _, err := proto.ParseAdmission(o.cfg.AdmissionKey, tok, "12D3KooWA", now.Add(2*time.Hour)); err == nil {
		t.Error("token after its ttl: got nil error")
	}

	// --admission-key alone verifies too.
	pub := o.cfg.AdmissionKey
	o, _ = parseFlags([]string{"--admission-key", base64.RawURLEncoding.EncodeToString(pub)}, io.Discard)
	if err := o.trust.apply(&o.cfg, func(string) string { return "" }); err != nil || !ed25519.PublicKey(o.cfg.AdmissionKey).Equal(pub) {
		t.Errorf("--admission-key: key %v err %v", o.cfg.AdmissionKey, err)
	}
	o, _ = parseFlags([]string{"--issue-relay-token"}, io.Discard)
	if done, err := o.trust.tool(&out, func(string) string { return "" }, now); !done || err == nil {
		t.Error("--issue-relay-token without a secret: got no error")
	}
}

// TestTrustFlagDefaults: the debug listener defaults to loopback, private
// addresses are refused, admission is open.
func TestTrustFlagDefaults(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.trust.apply(&o.cfg, func(k string) string {
		if k == envStatusToken {
			return "tok"
		}
		return ""
	}); err != nil {
		t.Fatal(err)
	}
	if o.trust.debugAddr != debugsrv.DefaultAddr || o.cfg.AllowPrivateAddrs || o.cfg.Admission != rendezvous.AdmissionOpen || o.cfg.StatusToken != "tok" {
		t.Errorf("defaults: debug %q private %v admission %q status token %q", o.trust.debugAddr, o.cfg.AllowPrivateAddrs, o.cfg.Admission, o.cfg.StatusToken)
	}
}
