"""The browser UI of the human-in-the-loop cycle: plain HTML/CSS/JS under static/, served by the gateway at /ui.

No build step and nothing fetched from elsewhere: the page talks to the server only through `/post` on the same
HTTP gateway, like any other client, and reads every parameter default and range from the `/parameters` endpoint.
"""
