/*
 * Live progress of AIP jobs in the admin, without reloading the page.
 *
 * Every element ".aip-progress[data-job-id]" whose data-finished is not "1" is
 * polled every 2 s through the JSON endpoint in its data-url (one request for all
 * such elements of the page). The bar, the text and every "[data-aip-state]" of the
 * job are updated. On a job's own page, the log ".aip-log[data-url]" is refreshed
 * too, and the page reloads once when the job finishes, to show its result and buttons.
 */
"use strict";

(function () {
    const INTERVAL_MS = 2000;

    function unfinishedElements() {
        return Array.from(document.querySelectorAll(".aip-progress[data-job-id]"))
            .filter((element) => element.dataset.finished !== "1");
    }

    function progressShow(element, job) {
        const bar = element.querySelector("progress");
        if (job.objects_total === null) {
            bar.removeAttribute("value");
        } else {
            bar.max = Math.max(job.objects_total, 1);
            bar.value = job.objects_done;
        }
        element.querySelector(".aip-progress-text").textContent = job.text;
        element.dataset.finished = job.finished ? "1" : "0";
    }

    function jobShow(job) {
        document.querySelectorAll(`.aip-progress[data-job-id="${job.id}"]`)
            .forEach((element) => progressShow(element, job));
        document.querySelectorAll(`[data-aip-state="${job.id}"]`)
            .forEach((element) => { element.textContent = job.state_label; });
    }

    async function jsonFetch(url) {
        const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
        if (!response.ok) {
            throw new Error(`${url} returned HTTP ${response.status}`);
        }
        return response.json();
    }

    // A job's own page: one request returns its progress and its log.
    async function jobPagePoll(log) {
        const job = await jsonFetch(log.dataset.url);
        jobShow(job);
        log.textContent = job.log || "(empty)";
        return job.finished;
    }

    // The job list: one request for every unfinished job shown.
    async function listPoll(elements) {
        const url = new URL(elements[0].dataset.url, window.location.href);
        new Set(elements.map((element) => element.dataset.jobId))
            .forEach((id) => url.searchParams.append("id", id));
        const data = await jsonFetch(url);
        data.jobs.forEach(jobShow);
    }

    async function poll() {
        const elements = unfinishedElements();
        if (elements.length === 0) {
            return;
        }
        const log = document.querySelector(".aip-log[data-url]");
        try {
            if (log !== null) {
                if (await jobPagePoll(log)) {
                    window.location.reload();
                    return;
                }
            } else {
                await listPoll(elements);
            }
        } catch (error) {
            // A lost connection or an expired session: keep the page as it is and try again.
            console.warn("AIP job progress:", error);
        }
        window.setTimeout(poll, INTERVAL_MS);
    }

    document.addEventListener("DOMContentLoaded", () => window.setTimeout(poll, INTERVAL_MS));
})();
