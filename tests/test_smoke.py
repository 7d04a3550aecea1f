import trio

import actorq
from tests.support import run


def test_a_job_runs_and_its_result_is_recorded(journal_path):
    async def main():
        async def double(job):
            return job.payload * 2

        async with actorq.open_runtime(journal_path, durability="os"):
            queue = await actorq.spawn_queue("q", double)
            job_id = await queue.enqueue(21)
            assert await queue.wait(job_id) == 42
            info = await queue.status(job_id)
            assert info.state is actorq.JobState.COMPLETED
            assert info.result == 42
            assert trio.current_time() == 0

    run(main)
