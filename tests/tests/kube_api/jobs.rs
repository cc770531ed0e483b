//! Jobs as a cluster handles them: the API server refuses a pod template it cannot run, the
//! job controller makes one Pod per Job, a container's log is there once it started (and a
//! 400 before), and deleting a Job takes its Pods only with a propagation policy that says so.

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;

use super::*;

fn mk_job(name: &str, restart: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "ci"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": restart,
            "initContainers": [{"name": "fetch", "image": "git:1"}],
            "containers": [{"name": "build", "image": "make:1"}]}}}})
}

#[tokio::test]
async fn a_job_gets_one_pod_and_its_logs_follow_the_containers() {
    let kube = KubeApi::start().await;
    kube.create(namespace("ci"));
    let jobs = api(&kube, "batch/v1", "Job", "jobs", "ci");
    let refused = failure(
        jobs.create(&PostParams::default(), &object(mk_job("bad", "Always")))
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert!(
        refused.message.contains("spec.template.spec.restartPolicy"),
        "{}",
        refused.message
    );
    assert!(kube.pods_of_job("ci", "bad").is_empty());

    jobs.create(&PostParams::default(), &object(mk_job("build", "Never")))
        .await
        .unwrap();
    let pods = kube.pods_of_job("ci", "build");
    assert_eq!(pods.len(), 1);
    let pod = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(pods[0]["metadata"]["ownerReferences"][0]["name"], "build");
    assert_eq!(pods[0]["status"]["phase"], "Pending");

    let api: Api<Pod> = Api::namespaced(kube.client(), "ci");
    let log = |container: Option<&str>| LogParams {
        container: container.map(str::to_string),
        ..LogParams::default()
    };
    // Without a name, the one app container is meant; it waits on the init container.
    let waiting = failure(api.logs(&pod, &log(None)).await);
    assert_eq!(waiting.code, 400);
    assert_eq!(
        waiting.message,
        format!("container \"build\" in pod \"{pod}\" is waiting to start: PodInitializing")
    );
    let unknown = failure(api.logs(&pod, &log(Some("deploy"))).await);
    assert_eq!(
        unknown.message,
        format!("container deploy is not valid for pod {pod}")
    );

    kube.start_container("ci", &pod, "fetch");
    kube.write_log("ci", &pod, "fetch", &["cloning"]);
    assert_eq!(
        api.logs(&pod, &log(Some("fetch"))).await.unwrap(),
        "cloning\n"
    );
    let pod_now = kube.get("pods", "ci", &pod).unwrap();
    assert_eq!(
        pod_now["status"]["phase"], "Pending",
        "init containers run while Pending"
    );
    // A followed log streams until its container ends.
    let mut follow = log(Some("fetch"));
    follow.follow = true;
    let stream = api.log_stream(&pod, &follow).await.unwrap();
    kube.write_log("ci", &pod, "fetch", &["cloned"]);
    kube.finish_container("ci", &pod, "fetch", 0, "");
    let mut text = String::new();
    futures::AsyncReadExt::read_to_string(&mut std::pin::pin!(stream), &mut text)
        .await
        .unwrap();
    assert_eq!(text, "cloning\ncloned\n");

    kube.start_container("ci", &pod, "build");
    assert_eq!(
        kube.get("pods", "ci", &pod).unwrap()["status"]["phase"],
        "Running"
    );
    kube.finish_container("ci", &pod, "build", 2, "");
    assert_eq!(
        kube.get("pods", "ci", &pod).unwrap()["status"]["phase"],
        "Failed"
    );
    let job = kube.get("jobs", "ci", "build").unwrap();
    assert_eq!(job["status"]["failed"], 1);
    assert!(
        job["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Failed")
    );
}

#[tokio::test]
async fn deleting_a_job_orphans_its_pods_unless_told_to_propagate() {
    let kube = KubeApi::start().await;
    kube.create(namespace("ci"));
    let jobs = api(&kube, "batch/v1", "Job", "jobs", "ci");
    for name in ["kept", "taken"] {
        jobs.create(&PostParams::default(), &object(mk_job(name, "Never")))
            .await
            .unwrap();
    }
    let pod_of = |job: &str| {
        kube.pods_of_job("ci", job)[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (kept, taken) = (pod_of("kept"), pod_of("taken"));
    jobs.delete("kept", &DeleteParams::default()).await.unwrap();
    let orphan = kube
        .get("pods", "ci", &kept)
        .expect("an orphaned Pod stays");
    assert!(orphan["metadata"]["ownerReferences"].is_null());
    jobs.delete("taken", &DeleteParams::background())
        .await
        .unwrap();
    assert!(kube.get("pods", "ci", &taken).is_none());
    assert!(kube.get("jobs", "ci", "taken").is_none());
}
