"""The page's view-model: a conversation's thread (messages, token chips, tints) and the explanation
panel, which the chat page, the explanation views and a share's frozen page all render."""
