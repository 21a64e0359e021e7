#!/usr/bin/env python3
"""A real Prometheus scrapes umpathd's metrics over HTTPS with a client certificate
(issue 17 item 9), and a job without one gets nothing.

Usage: https_scrape_test.py UMPATHD
Certificates are made here with openssl; umpathd runs with no backend on a temporary
socket. Waits on Prometheus' own view (up, the series), not on time.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promlab  # noqa: E402

CERTS = r"""set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1.key" 2>/dev/null; }
cert() {  # name CN SAN CA
  key "$1"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf 'subjectAltName=%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$4.pem" -CAkey "$4.key" -CAcreateserial -days 1 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
for ca in server-ca scrapers-ca; do
  key $ca
  openssl req -x509 -new -key $ca.key -out $ca.pem -days 1 -subj /CN=$ca
done
cert metrics localhost DNS:localhost,IP:127.0.0.1 server-ca
cert prometheus prometheus DNS:prometheus.umpath.test scrapers-ca
"""


def main():
    promlab.exit_on_sigterm()
    umpathd = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="umpath-https-scrape-")
    agent = None
    try:
        subprocess.run(["bash", "-c", CERTS], cwd=work, check=True)
        port = promlab.free_port()
        f = lambda name: os.path.join(work, name)  # noqa: E731
        err = open(f("umpathd.err"), "w")
        agent = subprocess.Popen(
            [umpathd, "--socket=" + f("umpathd.sock"), "--state_file=" + f("heads"), "--ublk=false",
             "--handover_socket=" + f("handover.sock"),
             "--metrics_address=127.0.0.1:%d" % port,
             "--metrics_tls_cert_file=" + f("metrics.pem"), "--metrics_tls_key_file=" + f("metrics.key"),
             "--metrics_tls_client_ca_file=" + f("scrapers-ca.pem")],
            stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
        target = "127.0.0.1:%d" % port
        tls = {"ca_file": f("server-ca.pem"), "server_name": "localhost"}
        jobs = [
            {"job_name": "with-cert", "scheme": "https", "static_configs": [{"targets": [target]}],
             "tls_config": dict(tls, cert_file=f("prometheus.pem"), key_file=f("prometheus.key"))},
            {"job_name": "without-cert", "scheme": "https", "static_configs": [{"targets": [target]}],
             "tls_config": tls},
            {"job_name": "plain-http", "scheme": "http", "static_configs": [{"targets": [target]}]},
        ]
        with promlab.Prometheus(scrape_configs=jobs) as prom:
            up = {}
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                ok, res = prom.query("up")
                up = {r["metric"]["job"]: r["value"][1] for r in res} if ok else {}
                if len(up) == 3 and up.get("with-cert") == "1":
                    break
                if agent.poll() is not None:
                    break
                time.sleep(0.5)
            ok, info = prom.query('umpath_build_info{job="with-cert"}')
            ok2, bad = prom.query('{job=~"without-cert|plain-http",__name__=~"umpath_.*"}')
            print("https scrape: up %s; umpath_build_info from the job with a certificate: %d series; "
                  "umpath_ series from the others: %d" % (sorted(up.items()), len(info) if ok else -1,
                                                          len(bad) if ok2 else -1))
            failures = []
            if up.get("with-cert") != "1":
                failures.append("the job with a client certificate did not scrape (up %s)" % up.get("with-cert"))
            if up.get("without-cert") != "0" or up.get("plain-http") != "0":
                failures.append("a job without a certificate, or over plain HTTP, was not refused")
            if not ok or len(info) != 1:
                failures.append("no umpath_build_info through HTTPS")
            if not ok2 or bad:
                failures.append("umpath_ series reached a job that should get nothing")
            if failures:
                sys.stderr.write(prom.log_tail())
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(30)
        agent = None
        err.close()
        with open(f("umpathd.err")) as e:
            log = e.read()
        print("umpathd exit %d; %s" % (rc, next((l for l in log.splitlines() if "serving metrics" in l), "")))
        if rc != 0:
            failures.append("umpathd exit %d" % rc)
        if "serving metrics on https://" not in log:
            failures.append("umpathd did not say it serves https")
        for x in failures:
            print("FAIL: " + x)
        if failures:
            print(log[-3000:])
            return 1
        print("https scrape test passed")
        return 0
    finally:
        if agent is not None:
            agent.kill()
            agent.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
