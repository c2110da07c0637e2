"""The local backend: a transformers causal LM behind the continuous-batching engine."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from mesh.slm.engine import BatchEngine, Submission
from mesh.slm.generation import Generation, GenerationRequest, GenerationStream, finalize
from mesh.slm.grammar import JsonOutput, OutputConstraint, check_schema, compile_grammar
from mesh.slm.guide import validate_grammar
from mesh.slm.loading import LoadedModel, load_model


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, request: GenerationRequest, use_chat_template: bool = True
) -> tuple[str, bool]:
    """The text the model reads for ``request``, and whether to add special tokens.

    Training (:mod:`mesh.convert.lora`) renders its examples with this too, so a student
    learns exactly the token sequence it is served.
    """
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            request.chat(), tokenize=False, add_generation_prompt=True
        )
        return str(text), False
    if request.prompt is not None:
        return request.prompt, True
    return "\n".join(m.get("content", "") for m in request.chat()), True


class TransformersBackend:
    """Serves one model from this process; many concurrent requests share forward passes.

    ``use_chat_template``: when the tokenizer has a chat template, prompts are rendered
    through it (a plain prompt as one user message); otherwise, and for tokenizers without
    one (the project's micro-SLMs), the prompt text goes in as is, and chat messages are
    joined by newlines.
    """

    def __init__(
        self,
        model: str | LoadedModel,
        *,
        base_dir: Path | None = None,
        name: str | None = None,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        threads: int | None = None,
        use_chat_template: bool = True,
        dtype: torch.dtype = torch.float32,
        adapter: str | None = None,
    ) -> None:
        self.loaded = (
            model
            if isinstance(model, LoadedModel)
            else load_model(model, base_dir=base_dir, name=name, dtype=dtype, adapter=adapter)
        )
        self.use_chat_template = use_chat_template
        self.engine = BatchEngine(
            self.loaded, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, threads=threads
        )

    @property
    def model_name(self) -> str:
        return self.loaded.name

    @property
    def parameters(self) -> int | None:
        return self.loaded.parameters

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.loaded.tokenizer, "chat_template", None))

    def check_output(self, output: OutputConstraint) -> None:
        """Compiles ``output`` against this vocabulary; raises SchemaError if unusable."""
        if isinstance(output, JsonOutput):
            check_schema(output.schema)
        validate_grammar(self.engine.vocabulary, compile_grammar(output, any_source=True))

    def render(self, request: GenerationRequest) -> tuple[str, bool]:
        """The prompt text, and whether the tokenizer should add its special tokens."""
        return render_prompt(self.loaded.tokenizer, request, self.use_chat_template)

    def stream(self, request: GenerationRequest) -> GenerationStream:
        """Starts a generation; iterate the stream for text chunks. Needs a running loop."""
        stream = GenerationStream(partial(finalize, request.output))
        prompt, special = self.render(request)
        submitted = time.monotonic()
        submission = Submission(
            prompt=prompt,
            add_special_tokens=special,
            max_new_tokens=request.max_new_tokens,
            stream=stream,
            output=request.output,
            stop=tuple(s for s in request.stop if s),
            deadline=None if request.timeout_s is None else submitted + request.timeout_s,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            submitted=submitted,
        )

        def cancel() -> None:
            submission.cancelled = True

        stream.on_cancel(cancel)
        self.engine.submit(submission)
        return stream

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self.stream(request).result()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.close)
