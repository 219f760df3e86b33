package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/allot-dev/allot/internal/testcluster"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
	pool                                                 *x509.CertPool
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "allot test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := testPKI{caFile: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage, ips []net.IP) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.serverCert, p.serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.clientCert, p.clientKey = issue("client", 3, x509.ExtKeyUsageClientAuth, nil)
	return p
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTLSScrapeConfigsSecrets runs two discoverers with the Target
// Allocator API on, one on plain HTTP and one with --web.tls-* and client
// certificates: the TLS one shows /scrape_configs with the job's password,
// the plain one redacts it, and the TLS one turns away clients without a
// certificate and plain HTTP.
func TestTLSScrapeConfigsSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, NATS and two discoverers")
	}
	const secret = "hunter2-in-the-config"
	c := testcluster.Start(t)
	pki := newTestPKI(t)
	cfgFile := filepath.Join(t.TempDir(), "allot.yml")
	cfg := fmt.Sprintf(`scrape_configs:
- job_name: secured
  basic_auth: {username: u, password: %s}
  static_configs: [{targets: ["127.0.0.1:1"]}]
`, secret)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"--etcd.endpoints=" + c.Etcd.Endpoint(), "--nats.url=" + c.NATS.URL(), "--config.file=" + cfgFile,
		"--target-allocator.enabled", "--events.replicas=1", "--log.level=warn"}
	plainAddr, tlsAddr := freeAddr(t), freeAddr(t)
	plain := startRun(t, append([]string{"discoverer", "--discoverer.id=plain", "--web.listen-address=" + plainAddr, "--data.dir=" + t.TempDir()}, common...)...)
	secured := startRun(t, append([]string{"discoverer", "--discoverer.id=tls", "--web.listen-address=" + tlsAddr, "--data.dir=" + t.TempDir(),
		"--web.tls-cert-file=" + pki.serverCert, "--web.tls-key-file=" + pki.serverKey, "--web.tls-client-ca-file=" + pki.caFile}, common...)...)

	clientCert, err := tls.LoadX509KeyPair(pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool, Certificates: certs}}}
	}
	withCert, noCert := client(clientCert), client()

	for _, tc := range []struct {
		name       string
		client     *http.Client
		url        string
		allot      *runInProcess
		wantSecret bool
	}{
		{"plain HTTP redacts", http.DefaultClient, "http://" + plainAddr + "/scrape_configs", plain, false},
		{"TLS with a client certificate shows secrets", withCert, "https://" + tlsAddr + "/scrape_configs", secured, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The first answers may come before the catalog has the job.
			body := pollOK(t, tc.client, tc.url, tc.allot, func(b string) bool { return strings.Contains(b, `"secured"`) })
			if got := strings.Contains(body, secret); got != tc.wantSecret {
				t.Errorf("password shown = %v, want %v: %s", got, tc.wantSecret, body)
			}
		})
	}

	t.Run("TLS without a client certificate is refused", func(t *testing.T) {
		resp, err := noCert.Get("https://" + tlsAddr + "/scrape_configs")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got %s without a client certificate, want a handshake failure", resp.Status)
		}
	})
	t.Run("plain HTTP to the TLS listener gets no data", func(t *testing.T) {
		resp, err := http.Get("http://" + tlsAddr + "/scrape_configs")
		if err != nil {
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "secured") {
			t.Errorf("plain HTTP to the TLS port answered %s: %s", resp.Status, b)
		}
	})
}

// pollOK GETs url, served by allot, until it answers 200 with a body that
// is ready, and returns the body.
func pollOK(t *testing.T, client *http.Client, url string, allot *runInProcess, ready func(string) bool) string {
	t.Helper()
	var last, body string
	if !waitUntil(30*time.Second, func() bool {
		if code, exited := allot.exited(); exited {
			t.Fatalf("allot exited with %d: %s", code, allot.stderr.String())
		}
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body, last = string(b), resp.Status+": "+string(b)
		return resp.StatusCode == http.StatusOK && ready(body)
	}) {
		t.Fatalf("%s: no 200 within 30s; last: %s\nstderr: %s", url, last, allot.stderr.String())
	}
	return body
}

func TestTLSOptions(t *testing.T) {
	pki := newTestPKI(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		o        tlsOptions
		wantErr  string
		wantTLS  bool
		wantMTLS bool
	}{
		{"off", tlsOptions{}, "", false, false},
		{"cert and key", tlsOptions{certFile: pki.serverCert, keyFile: pki.serverKey}, "", true, false},
		{"mTLS", tlsOptions{certFile: pki.serverCert, keyFile: pki.serverKey, clientCAFile: pki.caFile}, "", true, true},
		{"cert without key", tlsOptions{certFile: pki.serverCert}, "--web.tls-key-file is not", false, false},
		{"key without cert", tlsOptions{keyFile: pki.serverKey}, "--web.tls-cert-file is not", false, false},
		{"client CA alone", tlsOptions{clientCAFile: pki.caFile}, "--web.tls-client-ca-file needs", false, false},
		{"mismatched pair", tlsOptions{certFile: pki.serverCert, keyFile: pki.clientKey}, "load --web.tls-cert-file", false, false},
		{"missing file", tlsOptions{certFile: "/nonexistent/cert.pem", keyFile: pki.serverKey}, "/nonexistent/cert.pem", false, false},
		{"client CA not PEM", tlsOptions{certFile: pki.serverCert, keyFile: pki.serverKey, clientCAFile: notPEM}, "no PEM certificate", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.o.config()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (cfg != nil) != tc.wantTLS {
				t.Fatalf("TLS config %v, want TLS %v", cfg, tc.wantTLS)
			}
			if cfg != nil && (cfg.ClientAuth == tls.RequireAndVerifyClientCert) != tc.wantMTLS {
				t.Errorf("client auth %v, want mTLS %v", cfg.ClientAuth, tc.wantMTLS)
			}
		})
	}
}
