//! Networking end to end: the default bridge, published ports (TCP and UDP,
//! from the host's loopback and its other addresses), user networks whose
//! containers find each other by name, `--network container:`, bad input,
//! and cleanup. Each test runs berth in a network namespace it made itself
//! (its "host"), so the machine's own network is never touched; docker's
//! behaviour is the reference for outputs and errors.

mod common;

use common::Berth;

fn setup() -> Berth {
    let b = Berth::with_netns();
    b.import_busybox("busybox");
    b
}

fn ns(b: &Berth) -> &common::NetNs {
    b.netns.as_ref().unwrap()
}

/// Links in the test's namespace.
fn links(b: &Berth) -> String {
    ns(b).sh("ip -o link").1
}

/// Waits (up to 3 s) until no veth is left: the kernel deletes a container's
/// veth pair when it frees the container's network namespace, just after the
/// container is gone.
#[track_caller]
fn assert_no_veth(b: &Berth) {
    for _ in 0..60 {
        if !links(b).contains("veth") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("veths left: {}", links(b));
}

/// Elements of one of berth's nft maps or sets.
fn nft_list(b: &Berth, kind: &str, name: &str) -> String {
    ns(b).sh(&format!("nft list {kind} ip berth {name} 2>&1")).1
}

#[test]
fn bridge_publish_tcp_udp_and_cleanup() {
    let b = setup();
    let www = b.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from httpd\n").unwrap();
    let vol = format!("{}:/www:ro", www.display());

    // The default network: eth0 on the bridge, a default route, outbound NAT.
    let out = b
        .run(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "ip -o -4 addr show eth0; ip route",
        ])
        .ok();
    assert!(out.contains("inet 172.17.0.2/16"), "{out}");
    assert!(out.contains("default via 172.17.0.1"), "{out}");
    assert!(links(&b).contains("berth0"), "{}", links(&b));
    assert!(nft_list(&b, "set", "nets").contains("172.17.0.0/16"));

    // -p 8080:80 to busybox httpd answers on the host's loopback and on
    // another host address, and from a container through the gateway.
    b.run(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "-v", &vol, "busybox", "httpd", "-f", "-p",
        "80", "-h", "/www",
    ])
    .ok();
    assert_eq!(b.run(&["port", "web"]).ok(), "80/tcp -> 0.0.0.0:8080\n");
    assert_eq!(b.run(&["port", "web", "80"]).ok(), "0.0.0.0:8080\n");
    let ps = b.run(&["ps"]).ok();
    assert!(ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
    let (ok, page) = ns(&b).sh("curl -s --max-time 5 http://127.0.0.1:8080/");
    assert!(ok && page == "hello from httpd\n", "{page}");
    let (ok, page) = ns(&b)
        .sh("ip addr add 10.123.0.5/24 dev lo && curl -s --max-time 5 http://10.123.0.5:8080/");
    assert!(ok && page == "hello from httpd\n", "{page}");
    let page = b
        .run(&[
            "run",
            "--rm",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            "http://172.17.0.1:8080/",
        ])
        .ok();
    assert_eq!(
        page, "hello from httpd\n",
        "a container reaches a published port"
    );
    let ip = b
        .run(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"])
        .ok();
    let page = b
        .run(&[
            "run",
            "--rm",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{}/", ip.trim()),
        ])
        .ok();
    assert_eq!(
        page, "hello from httpd\n",
        "containers on the bridge reach each other"
    );

    // And the other way: a server on the host, reached from a container.
    let host_www = b.path("hostwww");
    std::fs::create_dir_all(&host_www).unwrap();
    std::fs::write(host_www.join("index.html"), "hello from the host\n").unwrap();
    let mut server = ns(&b)
        .command("busybox")
        .args(["httpd", "-f", "-p", "9090", "-h"])
        .arg(&host_www)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let page = b
        .run(&[
            "run",
            "--rm",
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            "http://172.17.0.1:9090/",
        ])
        .ok();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(page, "hello from the host\n");

    // The same host port again: refused before the container starts, and
    // nothing of it is left (docker's message and exit code 125).
    let before = links(&b);
    let err = b
        .run(&[
            "run", "-d", "--name", "web2", "-p", "8080:80", "busybox", "sleep", "60",
        ])
        .fails(125);
    assert!(err.contains("port is already allocated"), "{err}");
    // The exited `--rm` container's veth may still be going (the kernel frees
    // it with the namespace, asynchronously): only a new one would be wrong.
    let names = |l: &str| -> Vec<String> {
        l.lines()
            .filter_map(|x| x.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    };
    let was = names(&before);
    let new: Vec<String> = names(&links(&b))
        .into_iter()
        .filter(|n| !was.contains(n))
        .collect();
    assert!(
        new.is_empty(),
        "no veth left by the refused container: {new:?}"
    );

    // UDP: a datagram to the published port reaches the container. busybox
    // has no UDP server, so the container runs the host's python3 (with the
    // host's /usr and /lib mounted read-only) and the host sends with it too.
    let py = "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('', 53)); print(s.recvfrom(100)[0].decode(), flush=True)";
    b.run(&[
        "run",
        "-d",
        "--name",
        "udp",
        "-p",
        "127.0.0.1:5353:53/udp",
        "-v",
        "/usr:/usr:ro",
        "-v",
        "/lib:/lib:ro",
        "-v",
        "/lib64:/lib64:ro",
        "busybox",
        "/usr/bin/python3",
        "-c",
        py,
    ])
    .ok();
    assert!(nft_list(&b, "map", "udp_addr_ports").contains("127.0.0.1 . 5353"));
    let mut got = String::new();
    for _ in 0..50 {
        ns(&b).sh("python3 -c \"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'ping-over-udp', ('127.0.0.1', 5353))\"");
        got = b.run(&["logs", "udp"]).ok();
        if got.contains("ping-over-udp") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(got.contains("ping-over-udp"), "{got}");

    // -P publishes every exposed port on a random host port.
    b.run(&[
        "run", "-d", "--name", "webp", "--expose", "80", "-P", "-v", &vol, "busybox", "httpd",
        "-f", "-p", "80", "-h", "/www",
    ])
    .ok();
    let p = b.run(&["port", "webp", "80"]).ok();
    let host_port = p.trim().rsplit(':').next().unwrap().to_string();
    assert!(host_port.parse::<u16>().unwrap() > 1024, "{p}");
    let (ok, page) = ns(&b).sh(&format!(
        "curl -s --max-time 5 http://127.0.0.1:{host_port}/"
    ));
    assert!(ok && page == "hello from httpd\n", "{page}");
    b.run(&["rm", "-f", "webp"]).ok();

    // rm -f withdraws the ports and the veths.
    b.run(&["rm", "-f", "web", "udp"]).ok();
    assert_no_veth(&b);
    assert!(!nft_list(&b, "map", "tcp_ports").contains("8080"));
    assert!(!nft_list(&b, "map", "udp_addr_ports").contains("5353"));
    let (ok, _) = ns(&b).sh("curl -s --max-time 2 http://127.0.0.1:8080/");
    assert!(!ok, "nothing answers once the container is gone");
}

#[test]
fn killed_monitor_leaves_nothing_behind() {
    let b = setup();
    b.run(&[
        "run", "-d", "--name", "kk", "-p", "8081:80", "-p", "9999", "busybox", "sleep", "600",
    ])
    .ok();
    let ports = b.run(&["port", "kk"]).ok();
    assert!(ports.contains("80/tcp -> 0.0.0.0:8081"), "{ports}");
    assert!(
        ports.contains("9999/tcp -> 0.0.0.0:"),
        "a random host port: {ports}"
    );
    assert!(nft_list(&b, "map", "tcp_ports").contains("8081"));
    // SIGKILL the monitor, then the container: the crash docker's daemon
    // would clean up on restart; berth's next command does.
    let pid = b.run(&["inspect", "-f", "{{.State.Pid}}", "kk"]).ok();
    let pid: i32 = pid.trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let monitor: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // Once the container runs, its monitor has become the small watcher
    // program (conmon's role), not a fork holding the starting command's
    // memory.
    let watcher = || {
        std::fs::read_link(format!("/proc/{monitor}/exe"))
            .is_ok_and(|e| e.file_name().is_some_and(|n| n == "berth-monitor"))
    };
    for _ in 0..100 {
        if watcher() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        watcher(),
        "{:?}",
        std::fs::read_link(format!("/proc/{monitor}/exe"))
    );
    unsafe {
        libc::kill(monitor, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ps = b.run(&["ps", "-a"]).ok();
    assert!(ps.contains("Exited (137)"), "{ps}");
    assert!(
        !nft_list(&b, "map", "tcp_ports").contains("8081"),
        "ports withdrawn"
    );
    assert_no_veth(&b);
    // A DNAT no container owns (a crash between the steps of an rm): the
    // next publish or prune withdraws it.
    assert!(
        ns(&b)
            .sh("nft add element ip berth tcp_ports '{ 7777 : 172.17.0.99 . 80 }'")
            .0
    );
    assert!(nft_list(&b, "map", "tcp_ports").contains("7777"));
    b.run(&["network", "prune", "-f"]).ok();
    assert!(
        !nft_list(&b, "map", "tcp_ports").contains("7777"),
        "stray withdrawn"
    );
    // The port is free for another container, and rm releases the address.
    b.run(&[
        "run", "-d", "--name", "k2", "-p", "8081:80", "busybox", "sleep", "60",
    ])
    .ok();
    b.run(&["rm", "-f", "kk", "k2"]).ok();
}

#[test]
fn user_network_names_aliases_and_bad_input() {
    let b = setup();
    let id = b.run(&["network", "create", "appnet"]).ok();
    assert_eq!(id.trim().len(), 64);
    let ls = b.run(&["network", "ls"]).ok();
    assert!(
        ls.starts_with("NETWORK ID     NAME      DRIVER    SCOPE\n"),
        "{ls}"
    );
    for n in ["appnet", "bridge", "host", "none"] {
        assert!(ls.contains(n), "{ls}");
    }
    b.run(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "appnet",
        "--network-alias",
        "database",
        "busybox",
        "sleep",
        "600",
    ])
    .ok();
    let out = b
        .run(&[
            "run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
            "ping -c1 -W3 db >/dev/null && echo by-name; ping -c1 -W3 database >/dev/null && echo by-alias; cat /etc/resolv.conf",
        ])
        .ok();
    assert!(out.contains("by-name") && out.contains("by-alias"), "{out}");
    let gw = b
        .run(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            "appnet",
        ])
        .ok();
    assert!(out.contains(&format!("nameserver {}", gw.trim())), "{out}");
    let insp = b.run(&["network", "inspect", "appnet"]).ok();
    assert!(insp.contains("\"Name\": \"db\""), "{insp}");
    // --network container:db shares db's network namespace.
    let ip = b
        .run(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.appnet.IPAddress}}",
            "db",
        ])
        .ok();
    let out = b
        .run(&[
            "run",
            "--rm",
            "--network",
            "container:db",
            "busybox",
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "eth0",
        ])
        .ok();
    assert!(out.contains(ip.trim()), "{out} vs {ip}");

    // network connect gives a running container on the default bridge an
    // eth1 on appnet, where it is found by name; disconnect takes it away.
    b.run(&["run", "-d", "--name", "side", "busybox", "sleep", "600"])
        .ok();
    b.run(&[
        "network", "connect", "--alias", "sidekick", "appnet", "side",
    ])
    .ok();
    let out = b.run(&["exec", "side", "ip", "-o", "-4", "addr"]).ok();
    assert!(out.contains("eth0") && out.contains("eth1"), "{out}");
    let out = b
        .run(&[
            "run",
            "--rm",
            "--network",
            "appnet",
            "busybox",
            "sh",
            "-c",
            "ping -c1 -W3 sidekick >/dev/null && echo found",
        ])
        .ok();
    assert!(out.contains("found"), "{out}");
    let err = b.run(&["network", "connect", "appnet", "side"]).fails(1);
    assert!(err.contains("already exists in network appnet"), "{err}");
    b.run(&["network", "disconnect", "appnet", "side"]).ok();
    let out = b.run(&["exec", "side", "ip", "-o", "-4", "addr"]).ok();
    assert!(!out.contains("eth1"), "{out}");
    let err = b.run(&["network", "disconnect", "appnet", "side"]).fails(1);
    assert!(err.contains("is not connected to network appnet"), "{err}");
    b.run(&["rm", "-f", "side"]).ok();

    // An internal network: its containers reach each other, nothing else.
    ns(&b).sh("ip addr add 10.123.0.5/24 dev lo");
    let out = b
        .run(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "ping -c1 -W3 10.123.0.5 >/dev/null && echo reached",
        ])
        .ok();
    assert!(
        out.contains("reached"),
        "the default bridge reaches the host: {out}"
    );
    b.run(&["network", "create", "--internal", "inside"]).ok();
    b.run(&[
        "run",
        "-d",
        "--name",
        "in1",
        "--network",
        "inside",
        "busybox",
        "sleep",
        "600",
    ])
    .ok();
    let out = b
        .run(&[
            "run", "--rm", "--network", "inside", "busybox", "sh", "-c",
            "ip route; ping -c1 -W3 in1 >/dev/null && echo peer-ok; ping -c1 -W2 10.123.0.5 >/dev/null 2>&1 || echo no-way-out",
        ])
        .ok();
    assert!(!out.contains("default"), "{out}");
    assert!(
        out.contains("peer-ok") && out.contains("no-way-out"),
        "{out}"
    );
    b.run(&["rm", "-f", "in1"]).ok();
    b.run(&["network", "rm", "inside"]).ok();

    // Bad input: docker's errors, nothing half made.
    let err = b.run(&["network", "rm", "appnet"]).fails(1);
    assert!(err.contains("has active endpoints"), "{err}");
    let err = b.run(&["network", "rm", "bridge"]).fails(1);
    assert!(err.contains("pre-defined network"), "{err}");
    let err = b.run(&["network", "create", "appnet"]).fails(1);
    assert!(err.contains("already exists"), "{err}");
    b.run(&["network", "create", "--subnet", "10.50.0.0/16", "n1"])
        .ok();
    let err = b
        .run(&["network", "create", "--subnet", "10.50.3.0/24", "n2"])
        .fails(1);
    assert!(err.contains("overlaps"), "{err}");
    let err = b
        .run(&["network", "create", "--subnet", "10.60.0.1/16", "n3"])
        .fails(1);
    assert!(err.contains("host bits"), "{err}");
    b.run(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "n1",
        "--ip",
        "10.50.0.9",
        "busybox",
        "sleep",
        "600",
    ])
    .ok();
    let err = b
        .run(&[
            "run",
            "--rm",
            "--network",
            "n1",
            "--ip",
            "10.50.0.9",
            "busybox",
            "true",
        ])
        .fails(125);
    assert!(err.contains("Address already in use"), "{err}");
    let err = b
        .run(&["run", "--rm", "--network", "nosuchnet", "busybox", "true"])
        .fails(125);
    assert!(err.contains("network nosuchnet not found"), "{err}");
    let err = b
        .run(&["run", "--rm", "-p", "80:80:80:80", "busybox", "true"])
        .fails(125);
    assert!(err.contains("invalid publish spec"), "{err}");

    // Removing the containers frees the networks; rm takes bridge and rules.
    b.run(&["rm", "-f", "db", "fixed"]).ok();
    b.run(&["network", "rm", "appnet", "n1"]).ok();
    let l = links(&b);
    assert!(!l.contains("br-"), "{l}");
    assert!(!nft_list(&b, "set", "nets").contains("10.50.0.0/16"));
    assert_eq!(b.run(&["network", "prune", "-f"]).ok(), "");
    // -p with the host's network: docker's warning, ports ignored.
    let r = b.run(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-p",
        "8080:80",
        "busybox",
        "true",
    ]);
    r.ok();
    assert!(
        r.stderr()
            .contains("WARNING: Published ports are discarded when using host network mode"),
        "{}",
        r.stderr()
    );
    // system prune takes unused networks too, as docker's does.
    b.run(&["network", "create", "leftover"]).ok();
    let out = b.run(&["system", "prune", "-f"]).ok();
    assert!(out.contains("Deleted Networks:\nleftover\n"), "{out}");
    assert!(!b.run(&["network", "ls"]).ok().contains("leftover"));
}

#[test]
fn user_network_resolver_forwards_other_names() {
    // The resolver forwards what is not a container to the host's resolvers
    // (from /etc/resolv.conf). In the test's namespace the first of them is
    // played by a fake DNS server on that very address, answering 192.0.2.7
    // for anything.
    let upstream = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .find(|s| s.parse::<std::net::Ipv4Addr>().is_ok());
    let Some(upstream) = upstream else {
        eprintln!("skipped: no IPv4 nameserver in /etc/resolv.conf");
        return;
    };
    let b = setup();
    if !upstream.starts_with("127.") {
        assert!(ns(&b).sh(&format!("ip addr add {upstream}/32 dev lo")).0);
    }
    let fake = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{upstream}', 53))\nwhile True:\n    q, a = s.recvfrom(512)\n    end = 12 + q[12:].index(0) + 5\n    s.sendto(q[:2] + b'\\x81\\x80' + q[4:6] + b'\\x00\\x01\\x00\\x00\\x00\\x00' + q[12:end] + b'\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04' + bytes([192, 0, 2, 7]), a)\n"
    );
    let mut server = ns(&b)
        .command("python3")
        .args(["-c", &fake])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    b.run(&["network", "create", "fwdnet"]).ok();
    let out = b
        .run(&[
            "run",
            "--rm",
            "--network",
            "fwdnet",
            "busybox",
            "nslookup",
            "example.invalid",
        ])
        .stdout();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.contains("192.0.2.7"),
        "forwarded to the host's resolver: {out}"
    );
}

/// Two stores on one host (`--root`): the second's default network gets a
/// bridge of its own (`berth1`, another subnet) instead of sharing the
/// first one's `berth0`; both publish ports that answer; `system reset` of
/// one removes its containers, bridge, nft entries and files, and the
/// other's port keeps answering.
#[test]
fn two_stores_share_a_host() {
    let a = setup();
    let root_b = a.path("root-b");
    let run_b = |args: &[&str]| common::Run {
        out: a.command(args).env("BERTH_ROOT", &root_b).output().unwrap(),
    };
    run_b(&[
        "import",
        "--change",
        "CMD [\"sh\"]",
        common::busybox_tar().to_str().unwrap(),
        "busybox",
    ])
    .ok();
    for (name, port, page) in [("a", "18080", "from a"), ("b", "18081", "from b")] {
        let www = a.path(&format!("www-{name}"));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), format!("{page}\n")).unwrap();
        let vol = format!("{}:/www:ro", www.display());
        let args = [
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &format!("{port}:80"),
            "-v",
            &vol,
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ];
        if name == "a" {
            a.run(&args).ok();
        } else {
            run_b(&args).ok();
        }
    }
    let l = links(&a);
    assert!(l.contains("berth0") && l.contains("berth1"), "{l}");
    let subnet = |r: common::Run| r.ok().trim().to_string();
    let fmt = "{{range .IPAM.Config}}{{.Subnet}}{{end}}";
    let sa = subnet(a.run(&["network", "inspect", "-f", fmt, "bridge"]));
    let sb = subnet(run_b(&["network", "inspect", "-f", fmt, "bridge"]));
    assert_ne!(sa, sb);
    for (port, page) in [("18080", "from a\n"), ("18081", "from b\n")] {
        let (ok, got) = ns(&a).sh(&format!("curl -s --max-time 5 http://127.0.0.1:{port}/"));
        assert!(ok && got == page, "{port}: {got}");
    }
    run_b(&["system", "reset", "-f"]).ok();
    let l = links(&a);
    assert!(l.contains("berth0") && !l.contains("berth1"), "{l}");
    assert!(!nft_list(&a, "set", "nets").contains(&sb));
    assert_eq!(std::fs::read_dir(&root_b).unwrap().count(), 0);
    let (ok, got) = ns(&a).sh("curl -s --max-time 5 http://127.0.0.1:18080/");
    assert!(ok && got == "from a\n", "{got}");
    a.run(&["rm", "-f", "web"]).ok();
}

/// A `berth0` left on the host by a store that is gone (unlabelled, as an
/// older berth made it, on another subnet) is not taken for this store's:
/// the default network goes to `berth1` and its port answers.
#[test]
fn a_stale_bridge_of_a_gone_store_is_left_alone() {
    let b = setup();
    let (ok, out) = ns(&b).sh(
        "ip link add berth0 type bridge && ip addr add 10.99.0.1/16 dev berth0 && ip link set berth0 up",
    );
    assert!(ok, "{out}");
    b.run(&[
        "run", "-d", "--name", "web", "-p", "18090:80", "busybox", "httpd", "-f", "-p", "80", "-h",
        "/etc",
    ])
    .ok();
    let l = links(&b);
    assert!(l.contains("berth1"), "{l}");
    let host = b
        .run(&["inspect", "-f", "{{.Config.Hostname}}", "web"])
        .ok();
    let (ok, page) = ns(&b).sh("curl -s --max-time 5 http://127.0.0.1:18090/hostname");
    assert!(ok && page == host, "{page} vs {host}");
    let (_, addrs) = ns(&b).sh("ip -o -4 addr show berth0");
    assert!(addrs.contains("10.99.0.1/16"), "{addrs}");
    b.run(&["rm", "-f", "web"]).ok();
}
