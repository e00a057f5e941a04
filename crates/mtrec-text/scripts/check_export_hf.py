# Checks a folder written by `cargo xtask export RUN_DIR --encoder DIR` with Hugging Face transformers:
# mean pooling + L2 norm of AutoModel's last hidden states must equal `cargo xtask embed --encoder DIR`
# on the same texts. Usage: python check_export_hf.py DIR texts.csv (a `text` column) embed.npy
import sys, json, numpy as np, torch, pandas as pd
from transformers import AutoModel, AutoTokenizer
folder, csv, npy = sys.argv[1:4]
texts = pd.read_csv(csv, keep_default_na=False)["text"].tolist()
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModel.from_pretrained(folder).eval()
max_len = json.load(open(f"{folder}/sentence_bert_config.json"))["max_seq_length"]
with torch.no_grad():
    enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    e = (h * m).sum(1) / m.sum(1)
    e = torch.nn.functional.normalize(e, dim=1).numpy()
ours = np.load(npy)
print(json.dumps({"texts": len(texts), "max_abs_diff": float(np.abs(ours - e).max()),
                  "cosine_min": float((ours * e).sum(1).min())}))
