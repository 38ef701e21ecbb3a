"""Model calls for the server: batched chat generation, one-row streaming, and the recipes' own tasks.

Classification and entity extraction are the recipe's (Recipe.classify / Recipe.extract, the same code `ftkit eval`
scores with); the engine only runs them on the right adapter, one at a time.

Every call runs in a worker thread (never on the event loop) and holds one lock, so exactly one forward pass
runs at a time whatever mix of batches and streams is in flight; the lock also makes set_adapter safe, since the
active adapter belongs to the whole model. Batches are left-padded, so every row's new tokens start at the same
position; rows that asked for fewer tokens than the batch's largest max_tokens are cut to their own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from ftkit.serve.variants import Served, Variant


@dataclass
class ChatJob:
    prompt_ids: list[int]
    max_tokens: int
    stops: list[str]


@dataclass
class ChatResult:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length" (max_tokens reached)
    prompt_tokens: int
    completion_tokens: int


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """text up to the earliest stop string (excluded), and whether one was found."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


class _RowsDone(StoppingCriteria):
    """Per row of a batch: done at its own max_tokens or once its new text holds one of its stop strings.

    ended_at maps a row to how many new tokens it had when it ended; generate pads the row after that.
    """

    def __init__(self, tokenizer: Any, jobs: list[ChatJob], prompt_width: int) -> None:
        self.tokenizer, self.jobs, self.prompt_width = tokenizer, jobs, prompt_width
        self.ended_at: dict[int, int] = {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        generated = input_ids.shape[1] - self.prompt_width
        for row, job in enumerate(self.jobs):
            if row not in self.ended_at and (generated >= job.max_tokens or self._holds_stop(input_ids[row], job)):
                self.ended_at[row] = generated
        done = [row in self.ended_at for row in range(len(self.jobs))]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _holds_stop(self, ids: torch.Tensor, job: ChatJob) -> bool:
        if not job.stops:  # most requests: no decoding on the per-token path
            return False
        new = ids[self.prompt_width :].tolist()
        return cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True), job.stops)[1]


class Engine:
    def __init__(self, served: Served) -> None:
        self.model, self.tokenizer, self.variants = served.model, served.tokenizer, served.variants
        self.lock = threading.Lock()
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        self.eos_ids = {i for i in [*ids, tok.eos_token_id] if i is not None}

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return list(
            self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
        )

    def _use(self, variant: Variant) -> None:
        if variant.adapter is not None and self.model.active_adapter != variant.adapter:
            self.model.set_adapter(variant.adapter)

    def _inputs(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        return input_ids.to(self.model.device), mask.to(self.model.device)

    def _sampling(self, temperature: float, top_p: float) -> dict[str, Any]:
        if temperature <= 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}

    @torch.inference_mode()
    def _generate(
        self,
        prompts: list[list[int]],
        max_new: int,
        temperature: float,
        top_p: float,
        jobs: list[ChatJob] | None = None,
    ) -> list[list[int]]:
        """New token ids per prompt, each cut after its first end-of-turn token (kept, so callers see why it ended).

        With jobs, a row also ends at its own max_tokens or once its text holds one of its stop strings (cut there
        later by cut_at_stop): generation stops when every row has ended, not after the batch's largest max_tokens.
        """
        input_ids, mask = self._inputs(prompts)
        rows_done = _RowsDone(self.tokenizer, jobs, input_ids.shape[1]) if jobs else None
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max_new,
            pad_token_id=self.pad_id,
            stopping_criteria=StoppingCriteriaList([rows_done] if rows_done else []),
            **self._sampling(temperature, top_p),
        )
        ended_at = rows_done.ended_at if rows_done else {}
        rows = []
        for index, row in enumerate(output[:, input_ids.shape[1] :].tolist()):
            row = row[: ended_at.get(index, len(row))]  # after a row ended, generate pads it
            end = next((i + 1 for i, token in enumerate(row) if token in self.eos_ids), len(row))
            rows.append(row[:end])
        return rows

    def chat(self, variant: Variant, temperature: float, top_p: float, jobs: list[ChatJob]) -> list[ChatResult]:
        with self.lock:
            self._use(variant)
            rows = self._generate(
                [job.prompt_ids for job in jobs], max(job.max_tokens for job in jobs), temperature, top_p, jobs
            )
        results = []
        for job, row in zip(jobs, rows, strict=True):
            ended = bool(row) and row[-1] in self.eos_ids
            text, stopped = cut_at_stop(self.tokenizer.decode(row, skip_special_tokens=True), job.stops)
            reason = "stop" if ended or stopped else "length"
            results.append(ChatResult(text, reason, len(job.prompt_ids), len(row)))
        return results

    def run_task(self, variant: Variant, kind: str, texts: list[str]) -> list[dict[str, Any]]:
        """The variant's recipe answers a batch of texts: kind is one of its `serves` ("classify", "extract")."""
        task = getattr(variant.recipe, kind)  # the Router only sends a kind the recipe serves
        with self.lock:
            self._use(variant)
            return task(self.model, self.tokenizer, texts, min(len(texts), 64))

    def stream(
        self, variant: Variant, job: ChatJob, temperature: float, top_p: float, stop: threading.Event, info: dict
    ) -> Iterator[str]:
        """Text pieces as they are generated (batch of one); ends early once `stop` is set (stop string, client gone).

        Runs generate in its own thread, holding the model lock; the caller iterates (from a worker thread). When
        the pieces are done, info holds completion_tokens and ended (an end-of-turn token was generated).
        """

        class Halt(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        input_ids, mask = self._inputs([job.prompt_ids])
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with self.lock, torch.inference_mode():
                    self._use(variant)
                    output = self.model.generate(
                        input_ids=input_ids,
                        attention_mask=mask,
                        max_new_tokens=job.max_tokens,
                        pad_token_id=self.pad_id,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([Halt()]),
                        **self._sampling(temperature, top_p),
                    )
                new = output[0, input_ids.shape[1] :].tolist()
                end = next((i + 1 for i, token in enumerate(new) if token in self.eos_ids), len(new))
                info.update(completion_tokens=end, ended=end > 0 and new[end - 1] in self.eos_ids)
            except BaseException as error:  # noqa: BLE001 (handed to the consumer, which re-raises it)
                failure.append(error)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if failure:
            raise failure[0]
