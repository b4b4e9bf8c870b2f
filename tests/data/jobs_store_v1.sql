-- The job store of the previous version (JSON pixel boxes in stamp_outcomes.ranges),
-- dumped with sqlite3 iterdump; tests/test_outcome_memo.py opens it with today's JobStore.
BEGIN TRANSACTION;
CREATE TABLE "jobs" (
   "job_id" TEXT PRIMARY KEY,
   "kind" TEXT,
   "phase" TEXT,
   "creation_time" TEXT,
   "execution_duration" INTEGER,
   "destruction" TEXT,
   "base_url" TEXT,
   "run_id" TEXT,
   "owner_id" TEXT,
   "quote" TEXT,
   "start_time" TEXT,
   "end_time" TEXT,
   "error_type" TEXT,
   "error_message" TEXT,
   "progress_done" INTEGER,
   "progress_total" INTEGER,
   "attempts" INTEGER
);
INSERT INTO "jobs" VALUES('job1','batch','COMPLETED','2025-01-01T00:00:00.000Z',600,NULL,'http://127.0.0.1/async',NULL,NULL,NULL,NULL,NULL,NULL,NULL,0,0,0);
CREATE TABLE "parameters" (
   "job_id" TEXT,
   "seq" INTEGER,
   "name" TEXT,
   "value" TEXT,
   "by_reference" INTEGER,
   PRIMARY KEY ("job_id", "seq")
);
INSERT INTO "parameters" VALUES('job1',0,'SIZE','16',0);
CREATE TABLE "results" (
   "job_id" TEXT,
   "seq" INTEGER,
   "result_id" TEXT,
   "file" TEXT,
   "mime_type" TEXT,
   "size" INTEGER,
   PRIMARY KEY ("job_id", "seq")
);
CREATE TABLE "stamp_outcomes" (
   "key" TEXT PRIMARY KEY,
   "status" TEXT,
   "message" TEXT,
   "ranges" TEXT,
   "stamp" INTEGER,
   "created_at" REAL
);
INSERT INTO "stamp_outcomes" VALUES('k-ok','ok','','[[100, 164], [200, 264]]',1,1.79641806251229715343e+09);
INSERT INTO "stamp_outcomes" VALUES('k-cube','partial','','[[0, 12], [5, 30], [2, 3]]',1,1.79641806251229715343e+09);
INSERT INTO "stamp_outcomes" VALUES('k-miss','no-overlap','the region does not overlap the image',NULL,0,1.79641806251229715343e+09);
INSERT INTO "stamp_outcomes" VALUES('k-big','error','the cutout has 10 pixels, more than the limit of 4; ask for a smaller region',NULL,0,1.79641806251229715343e+09);
CREATE INDEX "idx_jobs_phase"
    ON "jobs" ("phase");
CREATE INDEX "idx_jobs_creation_time"
    ON "jobs" ("creation_time");
CREATE INDEX "idx_results_job_id_result_id"
    ON "results" ("job_id", "result_id");
COMMIT;
