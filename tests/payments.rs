//! The payments service's promises against a real three-node cluster: a transfer retried
//! ten times moves the money once; concurrent transfers keep the total and never push a
//! balance below zero; insufficient funds is a 409 that changes nothing; the accounts list
//! page by page, and a page size out of bounds is refused.

use std::time::Duration;

use firebreak_services::payments;
use firebreak_tests::{Api, TestCluster, TEST_TOKEN};
use serde_json::{json, Value};

async fn start() -> (
    TestCluster,
    String,
    reqwest::Client,
    tokio::task::JoinHandle<()>,
) {
    let cluster = TestCluster::start("");
    let api = Api::new();
    // Both groups: payments writes to the state group and fences by the control group's
    // route (CI saw a 503 or 504 right after an election when one node's word was enough).
    api.wait_steady(&cluster.addrs()).await;
    let (base, task) = instance(&cluster, "gasan").await;
    (cluster, base, reqwest::Client::new(), task)
}

/// One more payments instance on `cluster`, serving `site`: its URL and task.
async fn instance(cluster: &TestCluster, site: &str) -> (String, tokio::task::JoinHandle<()>) {
    let config = payments::Config {
        state_tls: cluster.service_tls("payments"),
        server_tls: None,
        nodes: cluster.addrs(),
        max_concurrent: 256,
        state_timeout: Duration::from_secs(5),
        site: Some(site.into()),
    };
    let (addr, task) = payments::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    (format!("http://{addr}"), task)
}

async fn open(http: &reqwest::Client, base: &str, id: &str, balance: u64) {
    let url = format!("{base}/payments/accounts");
    let body = json!({ "id": id, "balance": balance });
    let response = firebreak_tests::post_until_applied(http, &url, &body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn balance(http: &reqwest::Client, base: &str, id: &str) -> u64 {
    let value = get_json(http, format!("{base}/payments/accounts/{id}")).await;
    value["balance"].as_u64().unwrap()
}

/// Every account, `limit` a page: how many, and the sum of their balances.
async fn list_all(http: &reqwest::Client, base: &str, limit: usize) -> (usize, u64) {
    let (mut count, mut total, mut after) = (0, 0, None::<String>);
    for _ in 0..100 {
        let cursor = after
            .as_ref()
            .map_or(String::new(), |a| format!("&after={a}"));
        let page = get_json(
            http,
            format!("{base}/payments/accounts?limit={limit}{cursor}"),
        )
        .await;
        for account in page["accounts"].as_array().unwrap() {
            count += 1;
            total += account["balance"].as_u64().unwrap();
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return (count, total),
        }
    }
    panic!("the listing never ended");
}

async fn transfer(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    from: &str,
    to: &str,
    amount: u64,
) -> (u16, Value) {
    let body = json!({ "idempotency_key": key, "from": from, "to": to, "amount": amount });
    answer(http.post(format!("{base}/payments/transfers")).json(&body)).await
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_retried_ten_times_moves_the_money_once() {
    let (_cluster, base, http, task) = start().await;
    open(&http, &base, "alice", 100).await;
    open(&http, &base, "bob", 0).await;
    let first = transfer(&http, &base, "t-1", "alice", "bob", 30).await;
    assert_eq!(first.0, 200, "{first:?}");
    for _ in 0..9 {
        assert_eq!(
            transfer(&http, &base, "t-1", "alice", "bob", 30).await,
            first,
            "a retry returns the first result"
        );
    }
    assert_eq!(
        (
            balance(&http, &base, "alice").await,
            balance(&http, &base, "bob").await
        ),
        (70, 30)
    );

    // Insufficient funds: 409, nothing moves, and a retry gets the same answer.
    let refused = transfer(&http, &base, "t-2", "bob", "alice", 31).await;
    assert_eq!(refused.0, 409, "{refused:?}");
    assert_eq!(refused.1["status"], "insufficient_funds");
    assert_eq!(
        transfer(&http, &base, "t-2", "bob", "alice", 31).await,
        refused
    );
    assert_eq!(balance(&http, &base, "bob").await, 30);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_keep_the_total_and_no_balance_goes_negative() {
    let (_cluster, base, http, task) = start().await;
    let accounts = ["a", "b", "c", "d"];
    for id in accounts {
        open(&http, &base, id, 100).await;
    }
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..25 {
                    let (from, to) = (accounts[(c + i) % 4], accounts[(c + 2 * i + 1) % 4]);
                    if from == to {
                        continue;
                    }
                    // A 504 (outcome unknown: the write may have committed, on a busy
                    // machine) is asked again under the same key, which applies once.
                    let key = format!("c{c}-{i}");
                    let mut status = 504;
                    for _ in 0..5 {
                        let amount = 7 + (i as u64 % 13);
                        status = transfer(&http, &base, &key, from, to, amount).await.0;
                        if status != 504 {
                            break;
                        }
                    }
                    assert!(status == 200 || status == 409, "transfer answered {status}");
                    ok += usize::from(status == 200);
                }
                ok
            })
        })
        .collect();
    let mut moved = 0;
    for client in clients {
        moved += client.await.unwrap();
    }
    let (listed, total) = list_all(&http, &base, 2).await;
    assert_eq!(listed, 4, "every account listed");
    assert_eq!(total, 400, "the sum of balances changed");
    for id in accounts {
        // u64 balances cannot be negative; an underflow would have failed the parse or the sum.
        assert!(balance(&http, &base, id).await <= 400);
    }
    assert!(moved > 50, "only {moved} transfers succeeded");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_list_page_by_page_and_a_bad_page_size_is_refused() {
    let (_cluster, base, http, task) = start().await;
    for (id, balance) in [("a", 1), ("b", 2), ("c", 3)] {
        open(&http, &base, id, balance).await;
    }
    assert_eq!(list_all(&http, &base, 1).await, (3, 6));
    assert_eq!(list_all(&http, &base, 1000).await, (3, 6));
    for bad in ["limit=0", "limit=1001", "after=a/b", "limits=2"] {
        let response = http
            .get(format!("{base}/payments/accounts?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body = response.text().await.unwrap();
        assert!(!body.is_empty(), "{bad}: the refusal says why");
    }
    task.abort();
}

/// A transfer of 10 from a to b as a gateway sends it for an active-passive route at
/// `epoch`.
async fn fenced_transfer(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    epoch: u64,
) -> (u16, Value) {
    let body = json!({ "idempotency_key": key, "from": "a", "to": "b", "amount": 10 });
    let request = http
        .post(format!("{base}/payments/transfers"))
        .header("x-firebreak-epoch", epoch)
        .header("x-firebreak-primary", "gasan")
        .json(&body);
    answer(request).await
}

/// Applies a topology with payments active-passive on pangyo (`old`) then gasan and busan
/// (`new`): epoch 1, primary pangyo; then evacuates pangyo: epoch 2, primary gasan.
fn move_payments(cluster: &TestCluster, old: &str, new: &str) {
    let yaml = format!(
        "sites: [{{ name: pangyo }}, {{ name: gasan }}, {{ name: busan }}]\n\
         services:\n  - name: payments\n    mode: active-passive\n    priorities: [pangyo, gasan]\n\
         \x20   endpoints: {{ pangyo: \"{old}\", gasan: \"{new}\", busan: \"{new}\" }}\n"
    );
    firebreak_tests::apply_topology(cluster, "payments.yaml", &yaml);
    let args = [
        "evacuate",
        "pangyo",
        "--reason",
        "planned move",
        "--override",
        "dwell",
    ];
    let (code, out, err) = firebreak_tests::cli(&args, &cluster.admin_addrs(), Some(TEST_TOKEN));
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_lost_its_role_cannot_commit() {
    let (cluster, new_primary, http, task) = start().await;
    let (old_primary, old_task) = instance(&cluster, "pangyo").await;
    open(&http, &new_primary, "a", 100).await;
    open(&http, &new_primary, "b", 0).await;
    let cluster = tokio::task::spawn_blocking(move || {
        move_payments(&cluster, &old_primary, &new_primary);
        (cluster, old_primary, new_primary)
    });
    let (cluster, old_primary, new_primary) = cluster.await.unwrap();
    // The new primary writes at epoch 2; the old one, still sent epoch 1, must not commit.
    let (status, body) = fenced_transfer(&http, &new_primary, "t-new", 2).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = fenced_transfer(&http, &old_primary, "t-old", 1).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["kind"], "stale_epoch", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nothing was applied"));
    assert_eq!(balance(&http, &new_primary, "a").await, 90);
    assert_eq!(balance(&http, &new_primary, "b").await, 10);
    let record = http
        .get(format!("{new_primary}/payments/transfers/t-old"))
        .send()
        .await
        .unwrap();
    assert_eq!(record.status(), 404, "the refused transfer left no record");
    // A client that reaches the old primary directly, with the current epoch: not its role.
    let (status, body) = fenced_transfer(&http, &old_primary, "t-direct", 2).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["kind"], "not_primary", "{body}");
    // An epoch the routing never had is refused too, and moves no fence.
    let (status, body) = fenced_transfer(&http, &new_primary, "t-forged", 1_000_000).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not in the routing"));
    assert_eq!(fenced_transfer(&http, &new_primary, "t-2", 2).await.0, 200);
    assert_eq!(balance(&http, &new_primary, "a").await, 80);
    task.abort();
    old_task.abort();
    drop(cluster);
}
