package clusterflag

import (
	"bytes"
	"encoding/base64"
	"flag"
	"slices"
	"strings"
	"testing"
)

func TestConfig(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	std := base64.StdEncoding.EncodeToString(key)
	tests := []struct {
		name    string
		args    []string
		env     string
		wantOn  bool
		wantErr string
		wantKey []byte
		join    []string
	}{
		{name: "off", args: nil},
		{name: "key from env", args: []string{"--gossip", "127.0.0.1:0"}, env: std, wantOn: true, wantKey: key},
		{name: "flag wins over env", args: []string{"--gossip", "127.0.0.1:0", "--cluster-key", base64.RawURLEncoding.EncodeToString(key[:16])}, env: std, wantOn: true, wantKey: key[:16]},
		{name: "join list", args: []string{"--gossip", "0.0.0.0:7946", "--join", " 10.0.0.1:7946, 10.0.0.2:7946,"}, env: std, wantOn: true, wantKey: key, join: []string{"10.0.0.1:7946", "10.0.0.2:7946"}},
		{name: "no key", args: []string{"--gossip", "127.0.0.1:0"}, wantErr: EnvKey},
		{name: "bad base64", args: []string{"--gossip", "127.0.0.1:0", "--cluster-key", "!!"}, wantErr: "--cluster-key: cluster key is not base64"},
		{name: "short key", args: []string{"--gossip", "127.0.0.1:0"}, env: base64.StdEncoding.EncodeToString(key[:10]), wantErr: EnvKey + ": cluster key has 10 bytes"},
		{name: "join without gossip", args: []string{"--join", "10.0.0.1:7946"}, wantErr: "need --gossip"},
		{name: "bad bind", args: []string{"--gossip", "localhost"}, env: std, wantErr: "BindAddr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Flags
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			f.Register(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			cfg, on, err := f.Config(nil, func(k string) string {
				if k == EnvKey {
					return tt.env
				}
				return ""
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || on != tt.wantOn {
				t.Fatalf("got on %v, err %v, want on %v, nil", on, err, tt.wantOn)
			}
			if !bytes.Equal(cfg.Key, tt.wantKey) || !slices.Equal(cfg.Join, tt.join) {
				t.Errorf("got key %x, join %q, want %x, %q", cfg.Key, cfg.Join, tt.wantKey, tt.join)
			}
		})
	}
}
