from tests.support.sse_client import chat_stream


async def test_a_message_streams_a_whole_answer(server, http):
    stream = await chat_stream(http, server.url, "hello")
    assert stream.retries == [2000]
    assert [d["type"] for d in stream.data][:2] == ["session_info", "status"]
    assert stream.last["type"] == "complete"
